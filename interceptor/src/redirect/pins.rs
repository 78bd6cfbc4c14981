//! The bpffs side of the redirect: pin directories, link takeover and removal.

use std::{
    fs, io,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
};

use aya::{maps::MapData, programs::links::FdLink};
use interceptor_common::{
    BY_COOKIE_MAP, BY_PORT_MAP, CONFIG_MAP, MAX_REDIRECT_PORTS, MAX_TRACKED_CONNECTIONS,
    OriginalDst, PORTS_MAP, RedirectConfig,
};

use super::{PROGRAMS, RedirectError, sys};

const LINKS_DIR: &str = "links";
const MAPS_DIR: &str = "maps";
/// Suffix of a link pinned by this install, before it is renamed over the earlier one. Not
/// ".new": bpffs refuses every name with a dot in it (EPERM, even to look one up).
const STAGING_SUFFIX: &str = "_new";

/// A link this process attached and pinned. Dropping it closes our fd only: the pin keeps the
/// program attached.
pub(super) struct OwnedPin {
    _link: FdLink,
}

/// Creates `<pin_dir>/links` and `<pin_dir>/maps`; returns the maps directory.
pub(super) fn prepare_dirs(pin_dir: &Path) -> Result<PathBuf, RedirectError> {
    for dir in [LINKS_DIR, MAPS_DIR] {
        let path = pin_dir.join(dir);
        fs::create_dir_all(&path).map_err(|source| RedirectError::CreateDir { path, source })?;
    }
    Ok(pin_dir.join(MAPS_DIR))
}

/// Removes map pins whose shape differs from what this build's programs expect (an earlier
/// version of the daemon), so the loader creates fresh maps instead of reusing them wrongly.
///
/// Costs only the records of connections made before the restart.
pub(super) fn drop_incompatible_map_pins(maps_dir: &Path) {
    let tracked = MAX_TRACKED_CONNECTIONS;
    let expected: [(&str, usize, usize, u32); 4] = [
        (CONFIG_MAP, 4, size_of::<RedirectConfig>(), 1),
        (PORTS_MAP, 2, 1, MAX_REDIRECT_PORTS),
        (BY_COOKIE_MAP, 8, size_of::<OriginalDst>(), tracked),
        (BY_PORT_MAP, 4, size_of::<OriginalDst>(), tracked),
    ];
    for (name, key_size, value_size, max_entries) in expected {
        let path = maps_dir.join(name);
        if !path.exists() {
            continue;
        }
        let shape = MapData::from_pin(&path)
            .and_then(|map| map.info())
            .map(|info| {
                (
                    info.key_size() as usize,
                    info.value_size() as usize,
                    info.max_entries(),
                )
            });
        if shape.as_ref().ok() == Some(&(key_size, value_size, max_entries)) {
            continue;
        }
        tracing::warn!(
            map = name,
            path = %path.display(),
            ?shape,
            "pinned map has another layout; replacing it"
        );
        if let Err(error) = fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), %error, "remove stale map pin");
        }
    }
}

/// Pins each new link, replacing an earlier daemon's pin of the same program in one rename.
///
/// The new link is attached before its pin appears and the old pin disappears in the same
/// step, so some program always redirects. Returns the pins and whether any pin was replaced.
pub(super) fn pin_links(
    links: Vec<(&'static str, FdLink)>,
    pin_dir: &Path,
) -> Result<(Vec<OwnedPin>, bool), RedirectError> {
    let links_dir = pin_dir.join(LINKS_DIR);
    let mut took_over = false;
    let mut pinned = Vec::with_capacity(links.len());
    for (name, link) in links {
        let path = links_dir.join(name);
        took_over |= path.exists();
        pinned.push(pin_replacing(link, &path)?);
    }
    remove_foreign_link_pins(&links_dir)?;
    Ok((pinned, took_over))
}

fn pin_replacing(link: FdLink, path: &Path) -> Result<OwnedPin, RedirectError> {
    let mut staging = path.as_os_str().to_owned();
    staging.push(STAGING_SUFFIX);
    let staging = PathBuf::from(staging);
    // A crash between pin and rename leaves a staging pin; it is ours to replace.
    remove_if_present(&staging)?;

    let pin_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RedirectError::Pin { path, source }
    };
    let pinned = link.pin(&staging).map_err(|error| io::Error::other(error.to_string()));
    let pinned = pinned.map_err(pin_err(&staging))?;
    let earlier = open_earlier_link(path);
    fs::rename(&staging, path).map_err(pin_err(path))?;
    if let Some(earlier) = earlier {
        // Our link is attached and pinned: the earlier one can go now, even if the earlier
        // daemon still runs and holds it.
        if let Err(error) = sys::link_detach(&earlier) {
            tracing::warn!(path = %path.display(), %error, "detach the earlier daemon's link");
        }
    }
    Ok(OwnedPin { _link: pinned.into() })
}

/// The link an earlier daemon pinned at `path`, if any.
fn open_earlier_link(path: &Path) -> Option<OwnedFd> {
    match sys::obj_get(path) {
        Ok(fd) => Some(fd),
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => {
            // Replacing the pin still releases it, only later (when bpffs frees the inode).
            tracing::warn!(path = %path.display(), %error, "open the earlier daemon's link");
            None
        }
    }
}

/// Detaches the link pinned at `path` at once and removes the pin.
fn detach_and_unpin(path: &Path) -> Result<(), RedirectError> {
    match sys::obj_get(path) {
        Ok(link) => sys::link_detach(&link)
            .map_err(|source| RedirectError::Detach { path: path.to_path_buf(), source })?,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        // Not a link we can open (e.g. a stray file): removing it is all we can do.
        Err(_) => {}
    }
    remove_if_present(path)
}

/// Removes pins in the links directory that are not programs of this build (left by another
/// version), which detaches them.
fn remove_foreign_link_pins(links_dir: &Path) -> Result<(), RedirectError> {
    let entries = fs::read_dir(links_dir).map_err(|source| RedirectError::Unpin {
        path: links_dir.to_path_buf(),
        source,
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !PROGRAMS.iter().any(|program| name == *program) {
            detach_and_unpin(&entry.path())?;
        }
    }
    Ok(())
}

/// Detaches the programs and removes the pins under `pin_dir` (links first, then maps).
///
/// Each link is detached explicitly (BPF_LINK_DETACH), so the programs are gone when this
/// returns, even if a running daemon still holds the links.
pub fn uninstall_pins(pin_dir: &Path) -> Result<(), RedirectError> {
    for (dir, is_links) in [(LINKS_DIR, true), (MAPS_DIR, false)] {
        let dir = pin_dir.join(dir);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(RedirectError::Unpin { path: dir, source }),
        };
        for entry in entries.flatten() {
            if is_links {
                detach_and_unpin(&entry.path())?;
            } else {
                remove_if_present(&entry.path())?;
            }
        }
        remove_dir_if_present(&dir)?;
    }
    remove_dir_if_present(pin_dir)?;
    tracing::info!(pins = %pin_dir.display(), "redirect detached and unpinned");
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<(), RedirectError> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(RedirectError::Unpin {
            path: path.to_path_buf(),
            source: error,
        }),
        _ => Ok(()),
    }
}

fn remove_dir_if_present(path: &Path) -> Result<(), RedirectError> {
    match fs::remove_dir(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(RedirectError::Unpin {
            path: path.to_path_buf(),
            source: error,
        }),
        _ => Ok(()),
    }
}
