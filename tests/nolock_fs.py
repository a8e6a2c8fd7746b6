"""A real filesystem without locks, for the run-directory lock tests: an in-memory FUSE
filesystem served by this process over /dev/fuse, whose every lock request (flock or fcntl)
is answered ENOLCK, as NFS answers when no lock daemon runs.

    python -m tests.nolock_fs MOUNTPOINT     (root, /dev/fuse; prints "mounted", serves until
                                             SIGTERM or until the mount goes, then unmounts)

The kernel sends `flock` to the filesystem because INIT announces FUSE_FLOCK_LOCKS, so the
ENOLCK is the kernel's answer to the real system call, not a patched Python function. The rest
is a plain in-memory tree (files, folders, symbolic and hard links, renames), enough for a
whole training run. The protocol is the kernel's `include/uapi/linux/fuse.h`, version 7.31
answered (every kernel since 5.4 speaks it); nothing of libfuse is used.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import stat
import struct
import sys
import time
from dataclasses import dataclass, field

# Opcodes (fuse.h).
LOOKUP, FORGET, GETATTR, SETATTR, READLINK, SYMLINK = 1, 2, 3, 4, 5, 6
MKNOD, MKDIR, UNLINK, RMDIR, RENAME, LINK, OPEN, READ, WRITE = 8, 9, 10, 11, 12, 13, 14, 15, 16
STATFS, RELEASE, FSYNC, FLUSH, INIT, OPENDIR, READDIR = 17, 18, 20, 25, 26, 27, 28
RELEASEDIR, FSYNCDIR, GETLK, SETLK, SETLKW, ACCESS, CREATE = 29, 30, 31, 32, 33, 34, 35
INTERRUPT, DESTROY, BATCH_FORGET = 36, 38, 42
NO_REPLY = {FORGET, BATCH_FORGET, INTERRUPT}

FUSE_POSIX_LOCKS, FUSE_ATOMIC_O_TRUNC, FUSE_BIG_WRITES, FUSE_FLOCK_LOCKS = 2, 8, 32, 1024
MINOR = 31
MAX_WRITE = 1 << 17
IN_HEADER = struct.Struct("<IIQQIIIHH")  # len, opcode, unique, nodeid, uid, gid, pid, ext, pad
OUT_HEADER = struct.Struct("<IiQ")  # len, error (negative errno), unique
ATTR = struct.Struct("<QQQQQQIIIIIIIIII")  # 88 bytes
VALID_S = 1  # how long the kernel may cache names and attributes

FATTR_MODE, FATTR_SIZE, FATTR_ATIME, FATTR_MTIME = 1, 8, 16, 32
MS_NOSUID, MS_NODEV, MNT_DETACH = 2, 4, 2


@dataclass
class Node:
    mode: int
    data: bytearray = field(default_factory=bytearray)
    children: dict[bytes, int] = field(default_factory=dict)
    target: bytes = b""  # a symbolic link's
    nlink: int = 1
    mtime: float = field(default_factory=time.time)


class FuseError(Exception):
    def __init__(self, code: int):
        self.code = code


class NoLockFs:
    """The tree and the request handlers; `serve` reads requests until the mount goes."""

    def __init__(self, fd: int):
        self.fd = fd
        self.nodes = {1: Node(stat.S_IFDIR | 0o755, nlink=2)}
        self.next_id = 2

    # --- replies ----------------------------------------------------------------------
    def attr(self, nodeid: int) -> bytes:
        n = self.nodes[nodeid]
        size = len(n.target) if stat.S_ISLNK(n.mode) else len(n.data)
        sec, nsec = int(n.mtime), int((n.mtime % 1) * 1e9)
        return ATTR.pack(nodeid, size, (size + 511) // 512, sec, sec, sec, nsec, nsec, nsec,
                         n.mode, n.nlink, 0, 0, 0, 4096, 0)  # fmt: skip

    def entry(self, nodeid: int) -> bytes:
        return struct.pack("<QQQQII", nodeid, 0, VALID_S, VALID_S, 0, 0) + self.attr(nodeid)

    def attr_out(self, nodeid: int) -> bytes:
        return struct.pack("<QII", VALID_S, 0, 0) + self.attr(nodeid)

    # --- the tree ---------------------------------------------------------------------
    def child(self, parent: int, name: bytes) -> int:
        found = self.nodes[parent].children.get(name)
        if found is None:
            raise FuseError(errno.ENOENT)
        return found

    def add(self, parent: int, name: bytes, node: Node) -> int:
        if name in self.nodes[parent].children:
            raise FuseError(errno.EEXIST)
        nodeid, self.next_id = self.next_id, self.next_id + 1
        self.nodes[nodeid] = node
        self.nodes[parent].children[name] = nodeid
        if stat.S_ISDIR(node.mode):
            self.nodes[parent].nlink += 1
        return nodeid

    def remove(self, parent: int, name: bytes, want_dir: bool) -> None:
        nodeid = self.child(parent, name)
        node = self.nodes[nodeid]
        if want_dir != stat.S_ISDIR(node.mode):
            raise FuseError(errno.ENOTDIR if want_dir else errno.EISDIR)
        if want_dir and node.children:
            raise FuseError(errno.ENOTEMPTY)
        del self.nodes[parent].children[name]
        node.nlink -= 1
        if want_dir:
            self.nodes[parent].nlink -= 1

    # --- requests ---------------------------------------------------------------------
    def handle(self, opcode: int, nodeid: int, body: bytes) -> bytes:
        def names(count: int, skip: int = 0) -> list[bytes]:
            return body[skip:].split(b"\0")[:count]

        if opcode == INIT:
            major, minor, readahead, _flags = struct.unpack_from("<IIII", body)
            if major != 7 or minor < MINOR:
                raise FuseError(errno.EPROTO)
            flags = FUSE_POSIX_LOCKS | FUSE_FLOCK_LOCKS | FUSE_ATOMIC_O_TRUNC | FUSE_BIG_WRITES
            out = struct.pack("<IIIIHHIIHH", 7, MINOR, readahead, flags, 16, 12, MAX_WRITE, 1,
                              0, 0)  # fmt: skip
            return out.ljust(64, b"\0")
        if opcode in (GETLK, SETLK, SETLKW):
            raise FuseError(errno.ENOLCK)  # the point of this filesystem
        if opcode == LOOKUP:
            return self.entry(self.child(nodeid, names(1)[0]))
        if opcode == GETATTR:
            return self.attr_out(nodeid)
        if opcode == SETATTR:
            valid, _, _fh, size = struct.unpack_from("<IIQQ", body)
            mode = struct.unpack_from("<I", body, 68)[0]
            node = self.nodes[nodeid]
            if valid & FATTR_SIZE:
                del node.data[size:]
                node.data.extend(b"\0" * (size - len(node.data)))
            if valid & FATTR_MODE:
                node.mode = stat.S_IFMT(node.mode) | stat.S_IMODE(mode)
            if valid & (FATTR_SIZE | FATTR_MTIME | FATTR_ATIME):
                node.mtime = time.time()
            return self.attr_out(nodeid)
        if opcode == MKDIR:
            mode, _umask = struct.unpack_from("<II", body)
            new = self.add(nodeid, names(1, 8)[0], Node(stat.S_IFDIR | (mode & 0o7777), nlink=2))
            return self.entry(new)
        if opcode == MKNOD:
            mode = struct.unpack_from("<I", body)[0]
            if not stat.S_ISREG(mode):
                raise FuseError(errno.EPERM)
            return self.entry(self.add(nodeid, names(1, 16)[0], Node(mode)))
        if opcode == CREATE:
            _flags, mode = struct.unpack_from("<II", body)
            new = self.add(nodeid, names(1, 16)[0], Node(stat.S_IFREG | (mode & 0o7777)))
            return self.entry(new) + struct.pack("<QIi", 0, 0, 0)
        if opcode == SYMLINK:
            name, target = names(2)
            return self.entry(self.add(nodeid, name, Node(stat.S_IFLNK | 0o777, target=target)))
        if opcode == READLINK:
            return self.nodes[nodeid].target
        if opcode == LINK:
            old = struct.unpack_from("<Q", body)[0]
            name = names(1, 8)[0]
            if name in self.nodes[nodeid].children:
                raise FuseError(errno.EEXIST)
            self.nodes[nodeid].children[name] = old
            self.nodes[old].nlink += 1
            return self.entry(old)
        if opcode in (UNLINK, RMDIR):
            self.remove(nodeid, names(1)[0], want_dir=opcode == RMDIR)
            return b""
        if opcode == RENAME:
            new_parent = struct.unpack_from("<Q", body)[0]
            old_name, new_name = names(2, 8)
            moved = self.child(nodeid, old_name)
            replaced = self.nodes[new_parent].children.get(new_name)
            if replaced is not None and replaced != moved:
                self.remove(new_parent, new_name, stat.S_ISDIR(self.nodes[replaced].mode))
            del self.nodes[nodeid].children[old_name]
            self.nodes[new_parent].children[new_name] = moved
            if stat.S_ISDIR(self.nodes[moved].mode) and new_parent != nodeid:
                self.nodes[nodeid].nlink -= 1
                self.nodes[new_parent].nlink += 1
            return b""
        if opcode in (OPEN, OPENDIR):
            flags = struct.unpack_from("<I", body)[0]
            if opcode == OPEN and flags & os.O_TRUNC:
                del self.nodes[nodeid].data[:]
            return struct.pack("<QIi", 0, 0, 0)
        if opcode == READ:
            _fh, offset, size = struct.unpack_from("<QQI", body)
            return bytes(self.nodes[nodeid].data[offset : offset + size])
        if opcode == WRITE:
            _fh, offset, size = struct.unpack_from("<QQI", body)
            data = self.nodes[nodeid].data
            if offset > len(data):
                data.extend(b"\0" * (offset - len(data)))
            data[offset : offset + size] = body[40 : 40 + size]
            self.nodes[nodeid].mtime = time.time()
            return struct.pack("<II", size, 0)
        if opcode == READDIR:
            _fh, offset, size = struct.unpack_from("<QQI", body)
            out = b""
            entries = list(self.nodes[nodeid].children.items())
            for index, (name, child) in enumerate(entries[offset:], start=offset + 1):
                kind = stat.S_IFMT(self.nodes[child].mode) >> 12
                dirent = struct.pack("<QQII", child, index, len(name), kind) + name
                dirent = dirent.ljust((len(dirent) + 7) // 8 * 8, b"\0")
                if len(out) + len(dirent) > size:
                    break
                out += dirent
            return out
        if opcode == STATFS:
            return struct.pack("<QQQQQIIII", 1 << 20, 1 << 19, 1 << 19, 1 << 16, 1 << 15, 4096,
                               255, 4096, 0).ljust(80, b"\0")  # fmt: skip
        if opcode in (RELEASE, RELEASEDIR, FLUSH, FSYNC, FSYNCDIR, ACCESS, DESTROY):
            return b""
        raise FuseError(errno.ENOSYS)

    def serve(self) -> None:
        while True:
            try:
                request = os.read(self.fd, MAX_WRITE + 8192)
            except OSError as error:
                if error.errno in (errno.EINTR, errno.EAGAIN, errno.ENOENT):
                    continue
                if error.errno == errno.ENODEV:  # unmounted
                    return
                raise
            size, opcode, unique, nodeid, *_ = IN_HEADER.unpack_from(request)
            if opcode in NO_REPLY:
                continue
            try:
                body, code = self.handle(opcode, nodeid, request[IN_HEADER.size : size]), 0
            except FuseError as error:
                body, code = b"", -error.code
            except (KeyError, struct.error):
                body, code = b"", -errno.EIO
            try:
                os.write(self.fd, OUT_HEADER.pack(OUT_HEADER.size + len(body), code, unique) + body)
            except OSError as error:
                if error.errno != errno.ENOENT:  # ENOENT: the request was interrupted
                    raise
            if opcode == DESTROY:
                return


def libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def unmount(mountpoint: str) -> None:
    """Detaches the mount (a no-op if it is gone)."""
    libc().umount2(os.fsencode(mountpoint), MNT_DETACH)


def mount(mountpoint: str) -> int:
    """Mounts an empty NoLockFs at `mountpoint`; returns the /dev/fuse descriptor to serve."""
    fd = os.open("/dev/fuse", os.O_RDWR)
    options = f"fd={fd},rootmode=40755,user_id=0,group_id=0,default_permissions"
    if libc().mount(b"nolockfs", os.fsencode(mountpoint), b"fuse.nolockfs", MS_NOSUID | MS_NODEV,
                    options.encode()) != 0:  # fmt: skip
        code = ctypes.get_errno()
        os.close(fd)
        raise OSError(code, f"mount of a FUSE filesystem at {mountpoint}: {os.strerror(code)}")
    return fd


def main() -> None:
    mountpoint = sys.argv[1]
    fd = mount(mountpoint)
    signal.signal(signal.SIGTERM, lambda *_: (unmount(mountpoint), sys.exit(0)))
    print("mounted", flush=True)
    try:
        NoLockFs(fd).serve()
    finally:
        unmount(mountpoint)


if __name__ == "__main__":
    main()
