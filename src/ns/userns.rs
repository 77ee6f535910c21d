//! Entering a new user, network and mount namespace without root.
//!
//! An unprivileged user may create a user namespace and, owning it, network
//! and mount namespaces inside it, in which it holds `CAP_NET_ADMIN` and
//! `CAP_SYS_ADMIN`: enough to create a tap, configure it and bind-mount a
//! `resolv.conf`, none of it visible to or affecting the host. The user's
//! uid and gid are mapped to root inside (as `unshare -r` does), after
//! `setgroups` is denied, which the kernel requires before an unprivileged
//! gid map.
//!
//! Hosts can forbid this, and the kernel's bare `EPERM` or `ENOSPC` does not
//! say how; [`explain`] reads the knobs that cause it and names the one to
//! turn.

use nix::errno::Errno;
use nix::sched::CloneFlags;
use std::path::Path;

/// Moves the calling (single-threaded) process into new user, network and
/// mount namespaces, maps its uid and gid to 0 inside, and makes the mount
/// tree private so later mounts stay in the namespace.
///
/// # Errors
///
/// A message saying which step failed and, when the host forbids user
/// namespaces, how to allow them.
pub fn enter() -> Result<(), String> {
    let uid = nix::unistd::geteuid();
    let gid = nix::unistd::getegid();
    nix::sched::unshare(
        CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS,
    )
    .map_err(|e| explain(e, Path::new("/proc/sys")))?;
    let write = |file: &str, text: String| {
        std::fs::write(file, &text).map_err(|e| {
            let mut msg = format!("cannot write {file:?} ({}): {e}", text.trim());
            if e.raw_os_error() == Some(libc::EPERM) {
                msg.push_str(&restricted_hint(Path::new("/proc/sys")));
            }
            msg
        })
    };
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/uid_map", format!("0 {uid} 1\n"))?;
    write("/proc/self/gid_map", format!("0 {gid} 1\n"))?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("cannot make the mount tree private (mount --make-rprivate /): {e}"))?;
    Ok(())
}

/// The message for a failed `unshare`, from the error and the sysctls
/// under `proc_sys` (normally `/proc/sys`) that explain it.
pub fn explain(e: Errno, proc_sys: &Path) -> String {
    let read = |rel: &str| {
        std::fs::read_to_string(proc_sys.join(rel))
            .ok()
            .map(|s| s.trim().to_string())
    };
    let base = format!("cannot create a user namespace (unshare: {e})");
    if read("kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return format!(
            "{base}: unprivileged user namespaces are disabled on this host \
             (kernel.unprivileged_userns_clone = 0); enable them as root with \
             `sysctl -w kernel.unprivileged_userns_clone=1`"
        );
    }
    if read("user/max_user_namespaces").as_deref() == Some("0") {
        return format!(
            "{base}: user namespaces are disabled on this host (user.max_user_namespaces = 0); \
             enable them as root with `sysctl -w user.max_user_namespaces=15000`"
        );
    }
    match e {
        Errno::ENOSPC => format!(
            "{base}: the limit on user namespaces is reached (user.max_user_namespaces); \
             raise it as root with `sysctl -w user.max_user_namespaces=15000`"
        ),
        Errno::EINVAL => format!(
            "{base}: this kernel has no user namespaces (CONFIG_USER_NS), or this process \
             runs in a chroot or with threads"
        ),
        Errno::EPERM => format!(
            "{base}: unprivileged user namespaces are not allowed here (a container or a \
             seccomp profile may forbid them){}",
            restricted_hint(proc_sys)
        ),
        _ => base,
    }
}

/// Ubuntu's AppArmor restriction lets `unshare` succeed but strips the new
/// namespace's capabilities, so writing the id maps fails with `EPERM`.
fn restricted_hint(proc_sys: &Path) -> String {
    let restricted =
        std::fs::read_to_string(proc_sys.join("kernel/apparmor_restrict_unprivileged_userns"))
            .map(|s| s.trim() == "1")
            .unwrap_or(false);
    if restricted {
        "; AppArmor restricts unprivileged user namespaces on this host \
         (kernel.apparmor_restrict_unprivileged_userns = 1): allow them as root with \
         `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`, or give switchboard an \
         AppArmor profile with `userns,`"
            .into()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_proc(files: &[(&str, &str)]) -> std::path::PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "switchboard-ns-userns-test-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        for (rel, text) in files {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn names_the_debian_knob() {
        let d = fake_proc(&[("kernel/unprivileged_userns_clone", "0\n")]);
        let m = explain(Errno::EPERM, &d);
        assert!(m.contains("kernel.unprivileged_userns_clone = 0"), "{m}");
        assert!(
            m.contains("sysctl -w kernel.unprivileged_userns_clone=1"),
            "{m}"
        );
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn names_the_namespace_limit() {
        let d = fake_proc(&[
            ("kernel/unprivileged_userns_clone", "1\n"),
            ("user/max_user_namespaces", "0\n"),
        ]);
        let m = explain(Errno::ENOSPC, &d);
        assert!(m.contains("user.max_user_namespaces = 0"), "{m}");
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn falls_back_on_the_errno() {
        let d = fake_proc(&[("kernel/apparmor_restrict_unprivileged_userns", "1\n\n")]);
        let m = explain(Errno::EPERM, &d);
        assert!(
            m.starts_with("cannot create a user namespace (unshare: EPERM"),
            "{m}"
        );
        assert!(m.contains("apparmor_restrict_unprivileged_userns=0"), "{m}");
        let m = explain(Errno::ENOSPC, &d);
        assert!(m.contains("limit on user namespaces is reached"), "{m}");
        let m = explain(Errno::EINVAL, &d);
        assert!(m.contains("CONFIG_USER_NS"), "{m}");
        let _ = std::fs::remove_dir_all(d);
    }
}
