//! The namespace's own `/etc/resolv.conf`.
//!
//! A new network namespace keeps the host's file system, so its programs
//! read the host's `/etc/resolv.conf`, which often names a resolver the
//! namespace cannot reach (systemd-resolved's 127.0.0.53 is the host's
//! loopback, not ours). `switchboard ns` writes a file naming the servers
//! the segment's DHCP server gave (or `--dns`) and bind-mounts it over
//! `/etc/resolv.conf` in the namespace's private mount tree, as `unshare`
//! users and `vdens` do by hand: the host's file is untouched and the mount
//! disappears with the namespace.

use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The file the C library's resolver reads.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The text of a `resolv.conf` naming `servers` (in order) and, when
/// given, the search `domain`. The domain is expected to be a checked DNS
/// name (the DHCP client drops anything else), so it cannot add lines.
pub fn resolv_conf_text(servers: &[Ipv4Addr], domain: Option<&str>) -> String {
    let mut text = String::from("# written by switchboard ns for this namespace only\n");
    for s in servers {
        text.push_str(&format!("nameserver {s}\n"));
    }
    if let Some(d) = domain {
        text.push_str(&format!("search {d}\n"));
    }
    text
}

/// Makes `text` this mount namespace's `/etc/resolv.conf`: writes it to a
/// new file in `tmp`, bind-mounts that over [`RESOLV_CONF`] and unlinks the
/// file again (the mount keeps it alive, so nothing is left behind on the
/// host). The mount tree must already be private, or the mount would
/// propagate to the host.
///
/// # Errors
///
/// The file could not be written, or the mount was refused (for example
/// when `/etc/resolv.conf` is a dangling symbolic link).
pub fn install(text: &str, tmp: &Path) -> io::Result<()> {
    let path = temp_path(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display())))?;
    let written = f.write_all(text.as_bytes());
    drop(f);
    let mounted = written.and_then(|()| {
        nix::mount::mount(
            Some(&path),
            RESOLV_CONF,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("cannot bind-mount a private copy over {RESOLV_CONF}: {e}"),
            )
        })
    });
    let _ = std::fs::remove_file(&path);
    mounted
}

fn temp_path(tmp: &Path) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    tmp.join(format!(
        "switchboard-ns-{}-{nanos}.resolv.conf",
        std::process::id()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_in_order_then_the_search_domain() {
        let text = resolv_conf_text(
            &[Ipv4Addr::new(10, 0, 2, 2), Ipv4Addr::new(1, 1, 1, 1)],
            Some("lab"),
        );
        assert_eq!(
            text,
            "# written by switchboard ns for this namespace only\n\
             nameserver 10.0.2.2\n\
             nameserver 1.1.1.1\n\
             search lab\n"
        );
    }

    #[test]
    fn no_domain_no_search_line() {
        assert_eq!(
            resolv_conf_text(&[Ipv4Addr::new(192, 0, 2, 53)], None),
            "# written by switchboard ns for this namespace only\nnameserver 192.0.2.53\n"
        );
    }

    #[test]
    fn temp_names_are_in_the_given_directory() {
        let p = temp_path(Path::new("/some/dir"));
        assert_eq!(p.parent(), Some(Path::new("/some/dir")));
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(&format!("switchboard-ns-{}-", std::process::id())));
        assert!(name.ends_with(".resolv.conf"));
    }
}
