//! The switch directory: where the `ctl` socket and the data sockets live.
//!
//! [`SwitchDir`] creates or adopts the directory with `vde_switch`'s
//! permission model (`-m`, `--dirmode`, `-g`), refuses a directory that is a
//! symlink, belongs to someone else or is served by a running switch, clears
//! the sockets a crashed switch left behind, and removes what it created when
//! dropped.
//!
//! Sockets are created inside the directory by `SwitchDir::bind_socket`,
//! which gives each socket its final mode *at creation*: `bind(2)` has no mode
//! argument and `chmod` on a path can be redirected by a symlink, so the
//! process umask is set around the `bind` call instead. The umask is
//! process-wide; the daemon binds from its single event-loop thread, and a
//! lock inside this module serialises binds made by this crate.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr};
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::unistd::{Gid, Uid, UnlinkatFlags};

/// The name of the control socket inside the directory.
pub const CTL_NAME: &str = "ctl";

/// The longest directory path accepted: the longest data socket name
/// (`/65535.2147483647`, 17 bytes) plus its NUL must still fit the 108 bytes
/// of `sun_path`.
pub const MAX_DIR_PATH_LEN: usize = 108 - 1 - 17;

/// Mode of the `ctl` socket when no option is given: owner only.
const DEFAULT_SOCKET_MODE: u32 = 0o600;
/// Mode of the directory when no option is given: owner only, setgid so new
/// sockets inherit the directory's group.
const DEFAULT_DIR_MODE: u32 = 0o2700;

/// Serialises umask changes made by this crate (see the module docs).
static UMASK_LOCK: Mutex<()> = Mutex::new(());

/// Takes the umask lock, surviving a panic in another holder.
fn umask_lock() -> MutexGuard<'static, ()> {
    UMASK_LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `f` while no socket of this crate is being bound, so files `f`
/// creates get the normal umask. For tests that create files concurrently.
#[cfg(test)]
pub(crate) fn with_umask_lock<T>(f: impl FnOnce() -> T) -> T {
    let _guard = umask_lock();
    f()
}

/// Who may use the switch: `vde_switch`'s `-m MODE`, `--dirmode MODE` and
/// `-g GROUP`, with the same defaults and derivations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirOptions {
    /// Mode of the `ctl` socket and the data sockets (`-m`).
    pub mode: Option<u32>,
    /// Mode of the directory (`--dirmode`).
    pub dirmode: Option<u32>,
    /// Group given to the directory and every socket in it (`-g`), as a gid.
    pub group: Option<u32>,
}

impl DirOptions {
    /// The mode for sockets: `-m` if given, else `--dirmode` without execute
    /// bits, else 0600.
    pub fn socket_mode(&self) -> u32 {
        match (self.mode, self.dirmode) {
            (Some(mode), _) => mode & 0o777,
            (None, Some(dirmode)) => dirmode & 0o666,
            (None, None) => DEFAULT_SOCKET_MODE,
        }
    }

    /// The mode for the directory: `--dirmode` if given; else derived from
    /// `-m` (setgid, plus search permission for every class that may read or
    /// write the sockets); else 02700.
    pub fn dir_mode(&self) -> u32 {
        match (self.mode, self.dirmode) {
            (_, Some(dirmode)) => dirmode & 0o7777,
            (Some(mode), None) => {
                let class = |mask: u32, search: u32| {
                    if mode & mask != 0 {
                        (mode & mask) | search
                    } else {
                        0
                    }
                };
                0o2000 | class(0o600, 0o100) | class(0o060, 0o010) | class(0o006, 0o001)
            }
            (None, None) => DEFAULT_DIR_MODE,
        }
    }
}

/// Why a switch directory could not be set up.
#[derive(Debug)]
pub enum DirError {
    /// The path leaves no room for socket names in `sun_path`.
    PathTooLong(PathBuf),
    /// The path is a symbolic link; following it could let another user
    /// redirect where the switch creates its sockets.
    Symlink(PathBuf),
    /// The path exists and is not a directory.
    NotADirectory(PathBuf),
    /// The directory belongs to another user (and we are not root).
    WrongOwner {
        /// The directory.
        path: PathBuf,
        /// Its owner's uid.
        owner: u32,
    },
    /// A live switch answers on the directory's `ctl` socket.
    InUse(PathBuf),
    /// `ctl` exists and is something we will not remove (a directory).
    CtlNotSocket(PathBuf),
    /// A system call failed.
    Io {
        /// What we were doing.
        action: &'static str,
        /// The file it was done to.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl DirError {
    fn io(action: &'static str, path: &Path, source: impl Into<io::Error>) -> DirError {
        DirError::Io {
            action,
            path: path.to_owned(),
            source: source.into(),
        }
    }
}

impl fmt::Display for DirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirError::PathTooLong(p) => write!(
                f,
                "switch directory path {} is longer than {MAX_DIR_PATH_LEN} bytes",
                p.display()
            ),
            DirError::Symlink(p) => {
                write!(
                    f,
                    "switch directory {} is a symbolic link; refusing it",
                    p.display()
                )
            }
            DirError::NotADirectory(p) => {
                write!(f, "{} exists and is not a directory", p.display())
            }
            DirError::WrongOwner { path, owner } => write!(
                f,
                "switch directory {} belongs to uid {owner}, not to us",
                path.display()
            ),
            DirError::InUse(p) => {
                write!(
                    f,
                    "switch directory {} is in use by a running switch",
                    p.display()
                )
            }
            DirError::CtlNotSocket(p) => write!(f, "{} exists and is not a socket", p.display()),
            DirError::Io {
                action,
                path,
                source,
            } => write!(f, "cannot {action} {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for DirError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DirError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// What the `ctl` entry of an existing directory told us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CtlState {
    /// No `ctl` entry.
    Absent,
    /// A `ctl` entry nobody answers on (or a stray symlink or file).
    Stale,
    /// A switch accepts connections on `ctl`.
    Live,
}

/// An owned switch directory.
///
/// Holds an open descriptor on the verified directory, so the checks made at
/// [`open`](Self::open) keep applying to every later file operation done
/// relative to it. Dropping it removes the `ctl` socket (if a listener was
/// bound through it), every data socket, and the directory itself if we
/// created it and it is now empty.
#[derive(Debug)]
pub struct SwitchDir {
    path: PathBuf,
    dir: OwnedFd,
    created: bool,
    socket_mode: u32,
    dir_mode: u32,
    group: Option<u32>,
    ctl_bound: Cell<bool>,
    cleaned: bool,
}

impl SwitchDir {
    /// Creates the directory, or adopts an existing one that is ours and not
    /// served by a live switch, and applies the permissions of `options`.
    ///
    /// A relative `path` is made absolute against the current directory:
    /// clients receive socket paths from us and must be able to use them
    /// from anywhere.
    pub fn open(path: impl AsRef<Path>, options: &DirOptions) -> Result<SwitchDir, DirError> {
        let given = path.as_ref();
        let path = std::path::absolute(given).map_err(|e| DirError::io("resolve", given, e))?;
        if path.as_os_str().len() > MAX_DIR_PATH_LEN {
            return Err(DirError::PathTooLong(path));
        }

        // Created owner-only; the final mode is applied below, once we know
        // the directory is ours. Under the umask lock, so a concurrent
        // socket bind's umask cannot strip our own search permission.
        let mkdir = {
            let _guard = umask_lock();
            nix::unistd::mkdir(&path, Mode::from_bits_truncate(0o700))
        };
        let created = match mkdir {
            Ok(()) => true,
            Err(Errno::EEXIST) => false,
            Err(e) => return Err(DirError::io("create", &path, e)),
        };

        let stat = nix::sys::stat::lstat(&path).map_err(|e| DirError::io("inspect", &path, e))?;
        match file_type(&stat) {
            SFlag::S_IFDIR => {}
            SFlag::S_IFLNK => return Err(DirError::Symlink(path)),
            _ => return Err(DirError::NotADirectory(path)),
        }
        let dir = nix::fcntl::open(
            &path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            // Swapped for a symlink or a file since the lstat.
            Errno::ELOOP => DirError::Symlink(path.clone()),
            Errno::ENOTDIR => DirError::NotADirectory(path.clone()),
            e => DirError::io("open", &path, e),
        })?;
        let stat = nix::sys::stat::fstat(&dir).map_err(|e| DirError::io("inspect", &path, e))?;
        let euid = nix::unistd::geteuid().as_raw();
        if euid != 0 && stat.st_uid != euid {
            return Err(DirError::WrongOwner {
                path,
                owner: stat.st_uid,
            });
        }

        // Decide about a previous switch before touching anything. A
        // directory we just made is empty.
        let ctl_state = if created {
            CtlState::Absent
        } else {
            probe_ctl(&dir, &path)?
        };
        if ctl_state == CtlState::Live {
            return Err(DirError::InUse(path));
        }

        let switch_dir = SwitchDir {
            path,
            dir,
            created,
            socket_mode: options.socket_mode(),
            dir_mode: options.dir_mode(),
            group: options.group,
            ctl_bound: Cell::new(false),
            cleaned: false,
        };
        if let Some(gid) = switch_dir.group {
            nix::unistd::fchown(&switch_dir.dir, None, Some(Gid::from_raw(gid)))
                .map_err(|e| DirError::io("change the group of", &switch_dir.path, e))?;
        }
        nix::sys::stat::fchmod(
            &switch_dir.dir,
            Mode::from_bits_truncate(switch_dir.dir_mode),
        )
        .map_err(|e| DirError::io("set the mode of", &switch_dir.path, e))?;
        if ctl_state == CtlState::Stale {
            match nix::unistd::unlinkat(&switch_dir.dir, CTL_NAME, UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => {
                    return Err(DirError::io("remove the stale", &switch_dir.ctl_path(), e));
                }
            }
        }
        switch_dir.remove_data_sockets();
        Ok(switch_dir)
    }

    /// The directory's absolute path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of the control socket clients connect to.
    pub fn ctl_path(&self) -> PathBuf {
        self.path.join(CTL_NAME)
    }

    /// The mode given to the `ctl` socket and data sockets.
    pub fn socket_mode(&self) -> u32 {
        self.socket_mode
    }

    /// The mode applied to the directory.
    pub fn dir_mode(&self) -> u32 {
        self.dir_mode
    }

    /// The group given to the directory and its sockets, if any.
    pub fn group(&self) -> Option<u32> {
        self.group
    }

    /// True if [`open`](Self::open) created the directory (so dropping may
    /// remove it).
    pub fn created(&self) -> bool {
        self.created
    }

    /// Binds a socket named `name` inside the directory through `bind`, so
    /// that it is created with permission bits `mode`, then hands it to
    /// `owner` (if root) and the configured group without following symlinks.
    ///
    /// `bind` receives the full path; it must create the socket file (a
    /// `bind(2)`), which fails with `EADDRINUSE` if anything already exists
    /// there and never follows a symlink. If the ownership change fails, the
    /// socket file is removed and the error returned.
    pub(crate) fn bind_socket<T>(
        &self,
        name: &str,
        mode: u32,
        owner: Option<u32>,
        bind: impl FnOnce(&Path) -> io::Result<T>,
    ) -> io::Result<T> {
        let path = self.path.join(name);
        let socket = {
            let _guard = umask_lock();
            let previous = nix::sys::stat::umask(Mode::from_bits_truncate(!mode & 0o777));
            let result = bind(&path);
            nix::sys::stat::umask(previous);
            result?
        };
        if owner.is_some() || self.group.is_some() {
            let chown = nix::unistd::fchownat(
                &self.dir,
                name,
                owner.map(Uid::from_raw),
                self.group.map(Gid::from_raw),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            );
            if let Err(e) = chown {
                let _ = nix::unistd::unlinkat(&self.dir, name, UnlinkatFlags::NoRemoveDir);
                return Err(e.into());
            }
        }
        Ok(socket)
    }

    /// Records that the `ctl` socket now exists and is ours to remove.
    pub(crate) fn mark_ctl_bound(&self) {
        self.ctl_bound.set(true);
    }

    /// Removes the sockets and, if we created it and it is empty, the
    /// directory. Runs once; dropping calls it too. Errors are ignored: this
    /// is best-effort tidying at shutdown.
    pub fn cleanup(&mut self) {
        if self.cleaned {
            return;
        }
        self.cleaned = true;
        if self.ctl_bound.get() {
            let _ = nix::unistd::unlinkat(&self.dir, CTL_NAME, UnlinkatFlags::NoRemoveDir);
        }
        self.remove_data_sockets();
        if self.created {
            // Fails, as intended, if clients left their sockets in it.
            let _ = std::fs::remove_dir(&self.path);
        }
    }

    /// Removes every socket whose name follows the data socket pattern.
    /// Only called when no other switch serves the directory.
    fn remove_data_sockets(&self) {
        let Ok(entries) = std::fs::read_dir(&self.path) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !is_data_socket_name(name.as_bytes()) {
                continue;
            }
            let is_socket =
                nix::sys::stat::fstatat(&self.dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                    .is_ok_and(|stat| file_type(&stat) == SFlag::S_IFSOCK);
            if is_socket {
                let _ =
                    nix::unistd::unlinkat(&self.dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir);
            }
        }
    }
}

impl Drop for SwitchDir {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// The name `vde_switch` (and switchboard) gives the data socket of a port:
/// the port number, zero-padded to three digits, a dot, and the socket's
/// descriptor number, which keeps names unique among live sockets.
pub(crate) fn data_socket_name(port: u16, fd: i32) -> String {
    format!("{port:03}.{fd}")
}

/// True for names of the form `NNN.F` (three or more digits, a dot, one or
/// more digits): the data sockets of `vde_switch` and of switchboard.
pub(crate) fn is_data_socket_name(name: &[u8]) -> bool {
    let Some(dot) = name.iter().position(|&b| b == b'.') else {
        return false;
    };
    let (port, fd) = (&name[..dot], &name[dot + 1..]);
    port.len() >= 3
        && !fd.is_empty()
        && port.iter().all(u8::is_ascii_digit)
        && fd.iter().all(u8::is_ascii_digit)
}

/// The file-type bits of a stat result.
fn file_type(stat: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits())
}

/// Finds out whether a switch still serves `dir/ctl`.
fn probe_ctl(dir: &impl AsFd, path: &Path) -> Result<CtlState, DirError> {
    let ctl_path = path.join(CTL_NAME);
    let stat = match nix::sys::stat::fstatat(dir, CTL_NAME, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(Errno::ENOENT) => return Ok(CtlState::Absent),
        Err(e) => return Err(DirError::io("inspect", &ctl_path, e)),
    };
    match file_type(&stat) {
        SFlag::S_IFSOCK => {}
        SFlag::S_IFDIR => return Err(DirError::CtlNotSocket(ctl_path)),
        // A symlink or a plain file: nobody can be listening on it.
        _ => return Ok(CtlState::Stale),
    }
    match try_connect(&ctl_path) {
        // Accepted, or queued behind a full backlog: a live switch either way.
        Ok(()) | Err(Errno::EAGAIN | Errno::EINPROGRESS) => Ok(CtlState::Live),
        // Nobody listening, the file vanished, or it is a datagram socket.
        Err(Errno::ECONNREFUSED | Errno::ENOENT | Errno::EPROTOTYPE) => Ok(CtlState::Stale),
        Err(e) => Err(DirError::io("probe", &ctl_path, e)),
    }
}

/// A non-blocking stream connect, so a wedged switch cannot hang our start.
fn try_connect(path: &Path) -> Result<(), Errno> {
    let fd = nix::sys::socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    nix::sys::socket::connect(fd.as_raw_fd(), &addr)
    // Dropping `fd` closes the probe: the switch sees EOF before a request.
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::net::UnixListener;

    fn tempdir() -> tempfile::TempDir {
        with_umask_lock(|| tempfile::tempdir().unwrap())
    }

    /// Creates a socket file no socket is bound to: what a crashed process
    /// leaves. (Binding and closing a socket would do too, unless another
    /// test's fork briefly holds a copy of the descriptor.)
    pub(crate) fn dead_socket(path: &Path) {
        with_umask_lock(|| {
            nix::sys::stat::mknod(path, SFlag::S_IFSOCK, Mode::from_bits_truncate(0o600), 0)
        })
        .unwrap();
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn mode_derivation_matches_vde_switch() {
        let opts = |mode, dirmode| DirOptions {
            mode,
            dirmode,
            group: None,
        };
        assert_eq!(opts(None, None).socket_mode(), 0o600);
        assert_eq!(opts(None, None).dir_mode(), 0o2700);
        assert_eq!(opts(Some(0o660), None).dir_mode(), 0o2770);
        assert_eq!(opts(Some(0o666), None).dir_mode(), 0o2777);
        assert_eq!(opts(Some(0o640), None).dir_mode(), 0o2750);
        assert_eq!(opts(Some(0o600), None).dir_mode(), 0o2700);
        assert_eq!(opts(Some(0o200), None).dir_mode(), 0o2300);
        assert_eq!(opts(Some(0o660), None).socket_mode(), 0o660);
        assert_eq!(opts(None, Some(0o2775)).socket_mode(), 0o664);
        assert_eq!(opts(None, Some(0o2775)).dir_mode(), 0o2775);
        assert_eq!(opts(Some(0o600), Some(0o755)).socket_mode(), 0o600);
        assert_eq!(opts(Some(0o600), Some(0o755)).dir_mode(), 0o755);
    }

    #[test]
    fn data_socket_names() {
        assert_eq!(data_socket_name(5, 9), "005.9");
        assert_eq!(data_socket_name(1234, 12), "1234.12");
        assert!(is_data_socket_name(b"005.9"));
        assert!(is_data_socket_name(b"1234.12"));
        assert!(!is_data_socket_name(b"05.9"));
        assert!(!is_data_socket_name(b"005."));
        assert!(!is_data_socket_name(b"ctl"));
        assert!(!is_data_socket_name(b".01234-00000"));
        assert!(!is_data_socket_name(b"005.9x"));
    }

    #[test]
    fn creates_with_modes_and_removes_when_done() {
        let tmp = tempdir();
        let path = tmp.path().join("sw");
        let mut dir = SwitchDir::open(&path, &DirOptions::default()).unwrap();
        assert!(dir.created());
        assert_eq!(mode_of(&path), 0o2700);
        let socket = dir
            .bind_socket("ctl", dir.socket_mode(), None, |p| UnixListener::bind(p))
            .unwrap();
        dir.mark_ctl_bound();
        assert_eq!(mode_of(&path.join("ctl")), 0o600);
        let data = dir
            .bind_socket("003.77", 0o640, None, |p| {
                std::os::unix::net::UnixDatagram::bind(p)
            })
            .unwrap();
        assert_eq!(mode_of(&path.join("003.77")), 0o640);
        drop((socket, data));
        dir.cleanup();
        assert!(!path.exists());
    }

    #[test]
    fn a_group_is_applied_to_directory_and_sockets() {
        let tmp = tempdir();
        let path = tmp.path().join("sw");
        // Our own primary group is always allowed.
        let gid = nix::unistd::getegid().as_raw();
        let opts = DirOptions {
            mode: Some(0o660),
            dirmode: None,
            group: Some(gid),
        };
        let dir = SwitchDir::open(&path, &opts).unwrap();
        assert_eq!(mode_of(&path), 0o2770);
        let _ctl = dir
            .bind_socket("ctl", dir.socket_mode(), None, |p| UnixListener::bind(p))
            .unwrap();
        assert_eq!(std::fs::metadata(path.join("ctl")).unwrap().gid(), gid);
        assert_eq!(mode_of(&path.join("ctl")), 0o660);
    }

    #[test]
    fn binding_over_an_existing_file_fails() {
        let tmp = tempdir();
        let dir = SwitchDir::open(tmp.path().join("sw"), &DirOptions::default()).unwrap();
        std::os::unix::fs::symlink("/tmp/elsewhere", dir.path().join("001.5")).unwrap();
        let err = dir
            .bind_socket("001.5", 0o600, None, |p| {
                std::os::unix::net::UnixDatagram::bind(p)
            })
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE));
        assert!(!Path::new("/tmp/elsewhere").exists());
    }

    #[test]
    fn reuses_a_stale_directory() {
        let tmp = tempdir();
        let path = tmp.path().join("sw");
        with_umask_lock(|| std::fs::create_dir(&path)).unwrap();
        // A crashed switch: socket files with nobody behind them.
        dead_socket(&path.join("ctl"));
        dead_socket(&path.join("001.8"));
        with_umask_lock(|| std::fs::write(path.join("002.9"), b"not a socket")).unwrap();
        with_umask_lock(|| std::fs::write(path.join("notes"), b"keep me")).unwrap();

        let mut dir = SwitchDir::open(&path, &DirOptions::default()).unwrap();
        assert!(!dir.created());
        assert!(!path.join("ctl").exists());
        assert!(!path.join("001.8").exists());
        assert!(path.join("002.9").exists(), "only sockets are removed");
        assert!(path.join("notes").exists());
        dir.cleanup();
        assert!(path.exists(), "a directory we did not create stays");
    }

    #[test]
    fn refuses_a_directory_with_a_live_switch() {
        let tmp = tempdir();
        let path = tmp.path().join("sw");
        with_umask_lock(|| std::fs::create_dir(&path)).unwrap();
        let live = with_umask_lock(|| UnixListener::bind(path.join("ctl")).unwrap());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = SwitchDir::open(&path, &DirOptions::default()).unwrap_err();
        assert!(matches!(err, DirError::InUse(_)), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "switch directory {} is in use by a running switch",
                path.display()
            )
        );
        // Nothing of the live switch was touched.
        assert!(path.join("ctl").exists());
        assert_eq!(mode_of(&path), 0o755);
        drop(live);
    }

    #[test]
    fn refuses_symlinks_and_files() {
        let tmp = tempdir();
        let real = tmp.path().join("real");
        with_umask_lock(|| std::fs::create_dir(&real)).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = SwitchDir::open(&link, &DirOptions::default()).unwrap_err();
        assert!(matches!(err, DirError::Symlink(_)), "{err}");

        let file = tmp.path().join("file");
        with_umask_lock(|| std::fs::write(&file, b"")).unwrap();
        let err = SwitchDir::open(&file, &DirOptions::default()).unwrap_err();
        assert!(matches!(err, DirError::NotADirectory(_)), "{err}");

        let long = tmp.path().join("x".repeat(MAX_DIR_PATH_LEN));
        let err = SwitchDir::open(&long, &DirOptions::default()).unwrap_err();
        assert!(matches!(err, DirError::PathTooLong(_)), "{err}");
    }
}
