//! The two bpf(2) commands aya 0.14 does not expose for links: open a pinned object and detach
//! a link. Detaching explicitly matters because dropping a link's last reference (removing its
//! pin) releases it only later, from an RCU callback and a work queue, and a link held open by
//! another process (a daemon still running) would otherwise stay attached.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

/// `BPF_OBJ_GET` in uapi `enum bpf_cmd`.
const BPF_OBJ_GET: libc::c_long = 7;
/// `BPF_LINK_DETACH` in uapi `enum bpf_cmd` (Linux 5.9).
const BPF_LINK_DETACH: libc::c_long = 34;

/// The `BPF_OBJ_*` part of uapi `union bpf_attr`.
#[repr(C)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// The `link_detach` part of uapi `union bpf_attr`.
#[repr(C)]
struct LinkDetachAttr {
    link_fd: u32,
}

/// Opens the bpf object (here: a link) pinned at `path`.
pub(super) fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let path = CString::new(path.as_os_str().as_bytes())?;
    let attr = ObjAttr { pathname: path.as_ptr() as u64, bpf_fd: 0, file_flags: 0 };
    // SAFETY: `attr` is a valid bpf_attr prefix of the size passed, and `path` outlives the call.
    let fd = unsafe { bpf(BPF_OBJ_GET, (&raw const attr).cast(), size_of::<ObjAttr>()) }?;
    // SAFETY: on success BPF_OBJ_GET returns a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Detaches the link `fd` refers to from its cgroup now, whoever else holds it.
pub(super) fn link_detach(fd: &OwnedFd) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let attr = LinkDetachAttr { link_fd: fd.as_raw_fd() as u32 };
    // SAFETY: `attr` is a valid bpf_attr prefix of the size passed.
    unsafe { bpf(BPF_LINK_DETACH, (&raw const attr).cast(), size_of::<LinkDetachAttr>()) }?;
    Ok(())
}

/// # Safety
/// `attr` points to `size` readable bytes laid out as the bpf_attr member of `cmd`.
unsafe fn bpf(cmd: libc::c_long, attr: *const libc::c_void, size: usize) -> io::Result<i32> {
    // SAFETY: upheld by the caller; the kernel copies at most `size` bytes from `attr`.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr, size) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // The kernel returns 0 or a file descriptor, both fit in i32.
    Ok(ret as i32)
}
