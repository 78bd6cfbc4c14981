//! The kernel file systems the redirect needs: the cgroup v2 hierarchy and bpffs.

use std::{
    fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// Where bpffs is mounted when the machine has not mounted it already.
pub const BPFFS_DIR: &str = "/sys/fs/bpf";
const MOUNTS: &str = "/proc/self/mounts";

/// Why a kernel file system could not be found or mounted.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// /proc/self/mounts could not be read.
    #[error("read {MOUNTS}: {0}")]
    ReadMounts(#[source] io::Error),
    /// No cgroup2 file system is mounted.
    #[error("no cgroup2 file system in {MOUNTS}: the redirect needs cgroup v2")]
    NoCgroup2,
    /// The bpffs mount point could not be created.
    #[error("create bpffs mount point {}: {source}", path.display())]
    CreateMountPoint { path: PathBuf, source: io::Error },
    /// mount(2) of bpffs failed.
    #[error("mount bpffs at {}: {source}", path.display())]
    MountBpffs { path: PathBuf, source: nix::Error },
}

/// The mount point of the cgroup v2 hierarchy, from /proc/self/mounts.
///
/// On hybrid machines this is /sys/fs/cgroup/unified; on unified ones /sys/fs/cgroup.
pub fn cgroup2_mount() -> Result<PathBuf, MountError> {
    mount_point_of("cgroup2")?.ok_or(MountError::NoCgroup2)
}

/// The bpffs mount point: the first bpffs in /proc/self/mounts, else bpffs freshly mounted at
/// [`BPFFS_DIR`].
pub fn ensure_bpffs() -> Result<PathBuf, MountError> {
    if let Some(path) = mount_point_of("bpf")? {
        return Ok(path);
    }
    let path = PathBuf::from(BPFFS_DIR);
    fs::create_dir_all(&path).map_err(|source| MountError::CreateMountPoint {
        path: path.clone(),
        source,
    })?;
    nix::mount::mount(
        Some("bpf"),
        &path,
        Some("bpf"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some("mode=0700"),
    )
    .map_err(|source| MountError::MountBpffs {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// The id `bpf_get_current_cgroup_id()` returns for processes in the cgroup at `dir`.
///
/// On cgroup v2 that is the kernfs node id, which the file system reports as the inode number.
pub fn cgroup_id(dir: &Path) -> io::Result<u64> {
    Ok(fs::metadata(dir)?.ino())
}

/// The mount point of the first file system of type `fs_type`, if any.
fn mount_point_of(fs_type: &str) -> Result<Option<PathBuf>, MountError> {
    let mounts = fs::read_to_string(MOUNTS).map_err(MountError::ReadMounts)?;
    Ok(find_mount_point(&mounts, fs_type))
}

fn find_mount_point(mounts: &str, fs_type: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_ascii_whitespace();
        let (_source, target, kind) = (fields.next()?, fields.next()?, fields.next()?);
        (kind == fs_type).then(|| PathBuf::from(unescape_mount_field(target)))
    })
}

/// /proc/self/mounts writes space, tab, newline and backslash in paths as `\ooo` octal escapes.
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes.get(i + 1..i + 4).filter(|_| bytes[i] == b'\\');
        let code = escaped
            .and_then(|oct| std::str::from_utf8(oct).ok())
            .and_then(|oct| u8::from_str_radix(oct, 8).ok());
        match code {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0\n\
        cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n\
        cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";

    #[test]
    fn finds_the_unified_hierarchy_on_a_hybrid_machine() {
        let found = find_mount_point(HYBRID, "cgroup2");
        assert_eq!(found, Some(PathBuf::from("/sys/fs/cgroup/unified")));
    }

    #[test]
    fn reports_a_missing_bpffs_as_none() {
        assert_eq!(find_mount_point(HYBRID, "bpf"), None);
    }

    #[test]
    fn unescapes_spaces_in_mount_points() {
        let mounts = "bpf /run/my\\040bpf bpf rw 0 0\n";
        assert_eq!(
            find_mount_point(mounts, "bpf"),
            Some(PathBuf::from("/run/my bpf"))
        );
    }
}
