//! Careful file access, for inputs and outputs alike.
//!
//! Inputs are read only when they are regular files, and only up to a size
//! limit: a FIFO planted at `state.db` or `.env` must not hang a nightly
//! run (it would keep the lock, and every later night would fail), and a
//! link to `/dev/zero` must not fill memory. Opening uses `O_NONBLOCK`, so
//! even a FIFO swapped in after a check cannot block the open; the type is
//! then checked on the open descriptor.
//!
//! Outputs follow the rules of a shell redirection for `--out FILE` (links
//! are followed, special files are written into), but inside a directory
//! this tool manages nothing but regular files is written, and locks are
//! opened without following links. New directories are created owner-only
//! (0700), whatever the umask.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

/// `.env`, `config.yaml`, a state file: small text files.
pub const MAX_SETTINGS_BYTES: u64 = 4 << 20;
/// A `sessions/` file read whole (snapshots and transcripts).
pub const MAX_SESSION_FILE_BYTES: u64 = 256 << 20;
/// A state file (it lists pending turns of filtered runs).
pub const MAX_STATE_BYTES: u64 = 512 << 20;
/// `SOUL.md`, a `--system-prompt FILE`, a chat template file.
pub const MAX_PROMPT_BYTES: u64 = 4 << 20;
/// A `send --event` file (or stdin).
pub const MAX_EVENT_BYTES: u64 = 1 << 20;
/// `tokenizer.json` and its side files (large vocabularies reach tens of MB).
pub const MAX_TOKENIZER_BYTES: u64 = 256 << 20;

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
}

/// Opens `path` for reading without blocking on a FIFO, and checks that it
/// is a regular file no larger than `limit` bytes. Links are followed.
pub fn open_regular(path: &Path, limit: u64) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut opts, libc::O_NONBLOCK);
    let file = opts.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(other(format!(
            "not a regular file ({}); only regular files are read",
            describe_type(&meta.file_type())
        )));
    }
    if meta.len() > limit {
        return Err(other(format!(
            "{} bytes is larger than the {} MB this tool reads from such a file",
            meta.len(),
            limit >> 20
        )));
    }
    clear_nonblock(&file)?;
    Ok(file)
}

/// Clears `O_NONBLOCK` once the descriptor is known to be a regular file,
/// so that reads behave as usual.
fn clear_nonblock(file: &File) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        // SAFETY: fcntl on a descriptor this function borrows; no memory is passed.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}

/// Reads a whole regular file of at most `limit` bytes (see [`open_regular`]).
pub fn read_regular(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = open_regular(path, limit)?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(other(format!(
            "grew past the {} MB this tool reads from such a file",
            limit >> 20
        )));
    }
    Ok(bytes)
}

/// [`read_regular`] for a UTF-8 text file.
pub fn read_text(path: &Path, limit: u64) -> io::Result<String> {
    String::from_utf8(read_regular(path, limit)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// Reads at most `limit` bytes of a stream (stdin), as UTF-8 text.
pub fn read_stream_text(stream: impl Read, limit: u64) -> io::Result<String> {
    let mut bytes = Vec::new();
    stream.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(other(format!(
            "more than the {} MB this tool reads here",
            limit >> 20
        )));
    }
    String::from_utf8(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// Like [`read_regular`], but a missing file is `Ok(None)`.
pub fn read_optional(path: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
    match read_regular(path, limit) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// What kind of file a path is, for messages.
pub fn describe_type(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

/// An existing path that is neither a regular file nor a directory (after
/// following links): a FIFO, a device or a socket. Such a store is never
/// opened (SQLite would block on a FIFO).
pub fn special_file(path: &Path) -> Option<&'static str> {
    let meta = std::fs::metadata(path).ok()?;
    let t = meta.file_type();
    (!t.is_file() && !t.is_dir()).then(|| describe_type(&t))
}

/// Creates `dir` and any missing parent, each new one owner-only (0700)
/// whatever the umask. Existing directories are left as they are.
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_private_dir_all(parent)?;
    }
    let mut b = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    match b.create(dir) {
        Ok(()) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Opens (creating it 0600) a lock or other private file inside a directory
/// this tool manages, without following a link; anything but a regular
/// file there is refused.
pub fn open_private_nofollow(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
        opts.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let file = opts.open(path).map_err(|e| {
        if is_link_error(&e) {
            other(format!(
                "{} is a symbolic link; refusing to follow it",
                path.display()
            ))
        } else {
            e
        }
    })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(other(format!(
            "{} is {}, not a regular file; refusing to write to it",
            path.display(),
            describe_type(&meta.file_type())
        )));
    }
    Ok(file)
}

fn is_link_error(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        e.raw_os_error() == Some(libc::ELOOP)
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

/// Refuses a path inside a managed output directory that exists as a link
/// or as anything but a regular file.
pub fn check_managed_file(path: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(format!(
            "{} is a symbolic link; this tool writes only regular files inside its output directory (remove the link)",
            path.display()
        )),
        Ok(meta) if !meta.is_file() => Err(format!(
            "{} is {}, not a regular file; this tool writes only regular files inside its output directory",
            path.display(),
            describe_type(&meta.file_type())
        )),
        _ => Ok(()),
    }
}

/// Where `--out FILE` really writes, as a shell redirection would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileDest {
    /// A regular file (or none yet) at this path, with every link resolved:
    /// it is replaced atomically (temporary file and rename beside it).
    Regular(PathBuf),
    /// A FIFO, a terminal, `/dev/stdout`, `/dev/null`...: written into,
    /// never replaced.
    Special(PathBuf),
}

/// Follows the links of `path` (also a dangling one, to where it points).
pub fn resolve_links(path: &Path) -> io::Result<PathBuf> {
    let mut cur = absolute(path);
    for _ in 0..40 {
        match std::fs::symlink_metadata(&cur) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = std::fs::read_link(&cur)?;
                let base = cur.parent().map(Path::to_path_buf).unwrap_or_default();
                cur = normalize(&base.join(target));
            }
            _ => return Ok(cur),
        }
    }
    Err(other(format!(
        "{}: too many levels of symbolic links",
        path.display()
    )))
}

/// `/dev/stdout`, `/dev/stderr`, `/dev/fd/N`, `/proc/<pid>/fd/N`: a
/// descriptor of this process, written into as given (its link may name a
/// pipe, `pipe:[N]`, that is no path).
fn is_descriptor_path(path: &Path) -> bool {
    let p = absolute(path);
    let parts: Vec<&str> = p.iter().filter_map(|c| c.to_str()).collect();
    matches!(
        parts.as_slice(),
        ["/", "dev", "stdout" | "stderr"] | ["/", "dev", "fd", _] | ["/", "proc", _, "fd", _]
    )
}

/// The destination of `--out FILE`.
pub fn resolve_out_file(path: &Path) -> io::Result<FileDest> {
    if is_descriptor_path(path) {
        return Ok(FileDest::Special(path.to_path_buf()));
    }
    let real = resolve_links(path)?;
    match std::fs::metadata(&real) {
        Ok(meta) if meta.is_file() => Ok(FileDest::Regular(real)),
        Ok(meta) if meta.is_dir() => Err(other(format!("{} is a directory", real.display()))),
        Ok(_) => Ok(FileDest::Special(real)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(FileDest::Regular(real)),
        Err(e) => Err(e),
    }
}

/// `path` made absolute against the current directory (no link resolved).
pub fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        normalize(path)
    } else {
        let cwd = std::env::current_dir().unwrap_or_default();
        normalize(&cwd.join(path))
    }
}

/// Removes `.` and resolves `..` lexically.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The path with its existing directory part resolved (links, `..`), for
/// comparing two paths that may not exist yet.
pub fn canonical_ish(path: &Path) -> PathBuf {
    let abs = absolute(path);
    if let Ok(real) = abs.canonicalize() {
        return real;
    }
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => canonical_ish(parent).join(name),
        _ => abs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_regular_files_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a");
        std::fs::write(&f, b"hello").unwrap();
        assert_eq!(read_regular(&f, 10).unwrap(), b"hello");
        assert!(read_regular(&f, 3).is_err());
        assert!(read_regular(dir.path(), 10).is_err());
        assert!(
            read_optional(&dir.path().join("none"), 10)
                .unwrap()
                .is_none()
        );
        #[cfg(unix)]
        {
            assert!(read_regular(Path::new("/dev/zero"), 10).is_err());
            let fifo = dir.path().join("fifo");
            let made = std::process::Command::new("mkfifo").arg(&fifo).status();
            assert!(made.unwrap().success());
            let err = read_regular(&fifo, 10).unwrap_err();
            assert!(err.to_string().contains("FIFO"), "{err}");
        }
    }

    #[test]
    fn private_dirs_ignore_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_private_dir_all(&deep).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for p in ["a", "a/b", "a/b/c"] {
                let mode = std::fs::metadata(dir.path().join(p))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o700, "{p}");
            }
        }
    }

    #[cfg(unix)]
    #[test]
    fn links_resolve_like_a_shell() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.jsonl");
        let link = dir.path().join("link.jsonl");
        std::os::unix::fs::symlink("real.jsonl", &link).unwrap();
        assert_eq!(
            resolve_out_file(&link).unwrap(),
            FileDest::Regular(real.clone())
        );
        assert!(matches!(
            resolve_out_file(Path::new("/dev/null")).unwrap(),
            FileDest::Special(_)
        ));
        let lock = dir.path().join("x.lock");
        std::os::unix::fs::symlink(&real, &lock).unwrap();
        assert!(open_private_nofollow(&lock).is_err());
        assert!(!real.exists(), "the link was not followed");
    }
}
