//! A tiny Linux guest for tests that need a real VM's NIC on a segment.
//!
//! The guest is built from Debian packages only: the kernel from
//! `linux-image-<abi>-cloud-amd64` (the current dependency of
//! `linux-image-cloud-amd64`) and busybox from `busybox-static`, both fetched
//! with `apt-get download` (nothing is installed) and unpacked with
//! `dpkg-deb -x`. Debian's cloud kernel builds virtio-net and virtio-pci as
//! modules, so the initramfs carries them (found through the `depends=` of
//! each module's `.modinfo`, decompressed when they are `.ko.xz`) and its
//! `/init` loads them in dependency order.
//!
//! The initramfs is an uncompressed newc cpio written here, so the host needs
//! no `cpio`. Its `/init` reads `sbip=` (an address, or `dhcp` to ask the
//! segment's DHCP server with busybox's udhcpc), `sbpeer=`, `sbcount=`, `sbtries=` and
//! `sbwait=` from the kernel command line, configures `eth0`, pings the peer
//! and prints `SBGUEST-RESULT ok ...` or `SBGUEST-RESULT fail ...` on the
//! serial console, then keeps answering pings for `sbwait` seconds and powers
//! off.
//!
//! The result is cached under `<target>/test-guest/<kernel package>_<version>-<hash>/`
//! (the hash covers the init script and the module list), built once per test
//! process ([`OnceLock`]) and moved into place with an atomic rename, so
//! parallel tests and parallel runs never see a half-built image.

use crate::netns::{self, TestDir, log_tail, run, secs, wait_until, which};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The emulator the guest runs in (Debian package `qemu-system-x86`).
pub const QEMU: &str = "qemu-system-x86_64";

/// The metapackage whose dependency names the kernel to use.
const KERNEL_META: &str = "linux-image-cloud-amd64";

/// The modules virtio networking over PCI needs; their dependencies are
/// added from the modules themselves. Those built into the kernel are left
/// out.
const WANTED_MODULES: &[&str] = &["virtio_net", "virtio_pci"];

/// How long one boot may take from QEMU's start to the result marker. A TCG
/// boot of the cloud kernel takes a few seconds on an idle machine; this
/// leaves room for a loaded 2-core CI runner with several guests at once.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// The line the guest prints when its own check is done.
pub const RESULT_MARKER: &str = "SBGUEST-RESULT";

/// The guest's `/init`. `SBGUEST-*` lines are for the host; everything else
/// is diagnostics for failure messages.
const INIT: &str = r#"#!/bin/busybox sh
# switchboard test guest: load virtio-net, configure eth0, ping the peer,
# report on the serial console, answer pings for a while, power off.
/bin/busybox mkdir -p /proc /sys /dev /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null

SBIP= SBPEER= SBCOUNT=3 SBTRIES=30 SBWAIT=20
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    sbip=*) SBIP=${arg#sbip=} ;;
    sbpeer=*) SBPEER=${arg#sbpeer=} ;;
    sbcount=*) SBCOUNT=${arg#sbcount=} ;;
    sbtries=*) SBTRIES=${arg#sbtries=} ;;
    sbwait=*) SBWAIT=${arg#sbwait=} ;;
  esac
done
up() { cut -d' ' -f1 /proc/uptime; }
echo "SBGUEST-BOOTED uptime=$(up)"
# IPv4 only: no router solicitations or DAD chatter on the test segment.
for f in /proc/sys/net/ipv6/conf/*/disable_ipv6; do echo 1 > "$f"; done 2>/dev/null

while read -r mod; do
  insmod "/sbguest/$mod" || echo "SBGUEST-INSMOD-FAILED $mod"
done < /sbguest/modules

i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do
  sleep 0.1
  i=$((i + 1))
done
ip link set lo up
if [ "$SBIP" = dhcp ]; then
  # The address from the segment's DHCP server, as a real guest gets it.
  cat > /tmp/dhcp.sh <<'EOS'
#!/bin/sh
case "$1" in
  bound|renew)
    ip addr add "$ip/${mask:-24}" dev "$interface"
    echo "SBGUEST-DHCP ip=$ip mask=$mask router=$router dns=$dns domain=$domain"
    ;;
esac
exit 0
EOS
  chmod +x /tmp/dhcp.sh
  ip link set eth0 up
  udhcpc -i eth0 -f -q -n -t 10 -T 1 -A 1 -x hostname:sbguest -s /tmp/dhcp.sh \
    || echo "SBGUEST-DHCP-FAILED"
  SBIP=$(ip -4 -o addr show dev eth0 | awk '{print $4}')
else
  ip addr add "$SBIP" dev eth0
  ip link set eth0 up
fi
echo "SBGUEST-NIC-UP ip=$SBIP mac=$(cat /sys/class/net/eth0/address 2>/dev/null) uptime=$(up)"

ok=0 tries=0
while [ $ok -lt "$SBCOUNT" ] && [ $tries -lt "$SBTRIES" ]; do
  tries=$((tries + 1))
  if ping -c 1 -W 1 "$SBPEER" >/dev/null 2>&1; then
    ok=$((ok + 1))
  fi
done
if [ $ok -ge "$SBCOUNT" ]; then
  result=ok
else
  result=fail
  ip addr; ip neigh; cat /proc/net/dev; dmesg | tail -n 30
fi
echo "SBGUEST-RESULT $result replies=$ok tries=$tries peer=$SBPEER uptime=$(up)"

sleep "$SBWAIT"
echo "SBGUEST-DONE uptime=$(up)"
poweroff -f
"#;

/// A bootable guest: a kernel and an initramfs.
#[derive(Debug, Clone)]
pub struct GuestImage {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// The guest image, built on first use and cached under
/// `<target>/test-guest/`. Needs `apt-get` and `dpkg-deb` on a Debian host and
/// the network the first time (or `apt-get update` rights when the package
/// lists are missing). The result, including an error, is computed once per
/// test process.
pub fn guest_image() -> Result<GuestImage, String> {
    static IMAGE: OnceLock<Result<GuestImage, String>> = OnceLock::new();
    IMAGE.get_or_init(build_or_reuse).clone()
}

/// Why a guest cannot boot here (not root, no QEMU, no image), or `None`.
/// Does not check what the peers of a test need; use `skip_unless!` for
/// those.
pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (the guest's peers need namespaces and taps)".into());
    }
    if which(QEMU).is_none() {
        return Some(format!(
            "`{QEMU}` is not installed (apt-get install qemu-system-x86)"
        ));
    }
    match guest_image() {
        Ok(_) => None,
        Err(e) => Some(format!("cannot build the test guest: {e}")),
    }
}

/// The guest image, or `None` after printing `SKIP: <reason>`.
pub fn image_or_skip() -> Option<GuestImage> {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIP: {reason}");
        return None;
    }
    guest_image().ok()
}

/// A running QEMU with the guest, killed on drop. Its serial console and
/// QEMU's own output go to files that failure messages show.
pub struct GuestHandle {
    child: Child,
    serial: PathBuf,
    qemu_log: PathBuf,
    started: Instant,
    // Last, so the logs outlive the process.
    _dir: TestDir,
}

/// Boots `img` with one virtio-net NIC on `-netdev NETDEV_ARGS` (which must
/// name the backend `id=n0`, e.g. `vde,id=n0,sock=/run/sw`), MAC `mac`,
/// address `ip` (CIDR, e.g. `10.80.0.2/24`), pinging `peer`, then answering
/// pings for `wait_secs` seconds before it powers off.
pub fn boot(
    img: &GuestImage,
    netdev_args: &str,
    mac: &str,
    ip: &str,
    peer: &str,
    wait_secs: u32,
) -> GuestHandle {
    assert!(
        netdev_args.split(',').any(|a| a == "id=n0"),
        "netdev args must contain id=n0: {netdev_args}"
    );
    let dir = TestDir::new("guest");
    let serial = dir.join("serial.log");
    let qemu_log = dir.join("qemu.log");
    File::create(&serial).expect("create serial log");
    let append = format!("console=ttyS0 quiet panic=-1 sbip={ip} sbpeer={peer} sbwait={wait_secs}");
    let mut cmd = Command::new(QEMU);
    cmd.args(["-accel", "tcg", "-m", "256", "-smp", "1"])
        .args(["-nodefaults", "-display", "none", "-no-reboot"])
        .args(["-monitor", "none"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-kernel")
        .arg(&img.kernel)
        .arg("-initrd")
        .arg(&img.initrd)
        .args(["-append", &append])
        .args(["-netdev", netdev_args])
        .args([
            "-device",
            &format!("virtio-net-pci,netdev=n0,mac={mac},romfile="),
        ]);
    let out = File::create(&qemu_log).expect("create qemu log");
    let err = out.try_clone().expect("dup qemu log");
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {QEMU} ({cmd:?}): {e}"));
    GuestHandle {
        child,
        serial,
        qemu_log,
        started: Instant::now(),
        _dir: dir,
    }
}

impl GuestHandle {
    /// Waits (bounded) for the guest's `SBGUEST-RESULT` line and returns
    /// what follows the marker (`ok replies=3 ...` or `fail ...`). `None` if
    /// it does not come within `timeout` or QEMU exits first.
    pub fn wait_for_marker(&mut self, timeout: Duration) -> Option<String> {
        let mut found = None;
        wait_until(timeout, || {
            found = self.marker_line(RESULT_MARKER);
            found.is_some() || !self.running()
        });
        found.or_else(|| self.marker_line(RESULT_MARKER))
    }

    /// The rest of the first serial line that starts with `marker`.
    pub fn marker_line(&self, marker: &str) -> Option<String> {
        let text = std::fs::read(&self.serial).unwrap_or_default();
        String::from_utf8_lossy(&text).lines().find_map(|l| {
            let l = l.trim_end_matches('\r');
            let rest = l.strip_prefix(marker)?;
            // The whole word, not a longer marker that starts the same.
            (rest.is_empty() || rest.starts_with(' ')).then(|| rest.trim().to_string())
        })
    }

    /// Time since QEMU was started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether QEMU is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits (bounded) for QEMU to exit, as it does when the guest powers off.
    #[allow(dead_code)] // for tests that check a clean power-off
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        netns::wait_bounded(&mut self.child, timeout)
    }

    /// The serial console and QEMU's own output so far, for failure
    /// messages.
    pub fn logs(&self) -> String {
        format!(
            "--- guest serial console ---\n{}\n--- qemu ---\n{}",
            log_tail(&self.serial, 6000).trim_end(),
            log_tail(&self.qemu_log, 2000).trim_end()
        )
    }
}

impl Drop for GuestHandle {
    fn drop(&mut self) {
        netns::stop(&mut self.child, secs(2));
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// Where cached guests live: `<target>/test-guest`.
fn cache_root() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("test-guest")
}

/// `apt-get download` and friends, bounded.
fn apt(args: &[&str], cwd: &Path, timeout: Duration) -> netns::Ran {
    run(
        Command::new(args[0])
            .args(&args[1..])
            .current_dir(cwd)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        timeout,
    )
}

/// `apt-get update`, once, and only as root.
fn apt_update(cwd: &Path) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("package lists are missing and not root for apt-get update".into());
    }
    let r = apt(&["apt-get", "update"], cwd, secs(300));
    if r.success() {
        Ok(())
    } else {
        Err(format!("apt-get update failed: {}", r.describe()))
    }
}

/// The kernel package `linux-image-cloud-amd64` depends on, and its version.
fn kernel_package(cwd: &Path, may_update: bool) -> Result<(String, String), String> {
    let r = apt(&["apt-cache", "depends", KERNEL_META], cwd, secs(60));
    let pkg = r.stdout.lines().find_map(|l| {
        let name = l.trim().strip_prefix("Depends:")?.trim();
        name.starts_with("linux-image-")
            .then(|| name.trim_matches(|c| c == '<' || c == '>').to_string())
    });
    let Some(pkg) = pkg else {
        if may_update {
            apt_update(cwd)?;
            return kernel_package(cwd, false);
        }
        return Err(format!(
            "no kernel package behind {KERNEL_META}: {}",
            r.describe()
        ));
    };
    let r = apt(
        &["apt-cache", "show", "--no-all-versions", &pkg],
        cwd,
        secs(60),
    );
    let version = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Version:").map(|v| v.trim().to_string()))
        .ok_or_else(|| format!("no version for {pkg}: {}", r.describe()))?;
    Ok((pkg, version))
}

/// A short, stable hash (FNV-1a) of what goes into the initramfs besides
/// the packages, so changing the init script invalidates the cache.
fn recipe_hash() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in INIT.bytes().chain(WANTED_MODULES.join(",").bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{:08x}", h >> 32)
}

fn image_in(dir: &Path) -> GuestImage {
    GuestImage {
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.cpio"),
    }
}

fn is_complete(dir: &Path) -> bool {
    let img = image_in(dir);
    img.kernel.is_file() && img.initrd.is_file()
}

fn build_or_reuse() -> Result<GuestImage, String> {
    let root = cache_root();
    std::fs::create_dir_all(&root).map_err(|e| format!("create {}: {e}", root.display()))?;
    let (pkg, version) = match kernel_package(&root, true) {
        Ok(v) => v,
        Err(e) => {
            // Offline with a cache from an earlier run: use it.
            return newest_cached(&root).ok_or(e);
        }
    };
    let key = format!("{pkg}_{version}-{}", recipe_hash()).replace([':', '/', '~'], "_");
    let dest = root.join(&key);
    if is_complete(&dest) {
        return Ok(image_in(&dest));
    }
    let work = root.join(format!(".build-{}-{}", std::process::id(), netns::unique()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("create {}: {e}", work.display()))?;
    let built = build(&work, &pkg, &version);
    let result = built.and_then(|out| {
        // Atomic: a parallel run either sees no image or a whole one. If one
        // got there first, keep theirs.
        if std::fs::rename(&out, &dest).is_err() && !is_complete(&dest) {
            return Err(format!("cannot move the image into {}", dest.display()));
        }
        Ok(image_in(&dest))
    });
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn newest_cached(root: &Path) -> Option<GuestImage> {
    std::fs::read_dir(root)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.') && is_complete(&e.path()))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| image_in(&e.path()))
}

/// Downloads and unpacks the packages in `work` and writes the image to
/// `work/out`, which it returns.
fn build(work: &Path, pkg: &str, version: &str) -> Result<PathBuf, String> {
    let kernel_spec = format!("{pkg}={version}");
    // As root, apt would fetch as `_apt`, which cannot write here: fetch as
    // ourselves instead of warning about it.
    let download = || {
        apt(
            &[
                "apt-get",
                "-o",
                "APT::Sandbox::User=root",
                "download",
                &kernel_spec,
                "busybox-static",
            ],
            work,
            secs(300),
        )
    };
    let mut r = download();
    if !r.success() {
        // Stale package lists name files the mirror no longer has.
        apt_update(work)?;
        r = download();
    }
    if !r.success() {
        return Err(format!("apt-get download failed: {}", r.describe()));
    }
    let debs: Vec<PathBuf> = std::fs::read_dir(work)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    let find_deb = |prefix: &str| {
        debs.iter()
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            })
            .cloned()
            .ok_or_else(|| {
                format!(
                    "apt-get download left no {prefix}*.deb in {}",
                    work.display()
                )
            })
    };
    let kernel_deb = find_deb(&format!("{pkg}_"))?;
    let busybox_deb = find_deb("busybox-static_")?;
    let kroot = work.join("kernel");
    let broot = work.join("busybox");
    for (deb, into) in [(&kernel_deb, &kroot), (&busybox_deb, &broot)] {
        let r = run(
            Command::new("dpkg-deb").arg("-x").arg(deb).arg(into),
            secs(120),
        );
        if !r.success() {
            return Err(format!("dpkg-deb -x {}: {}", deb.display(), r.describe()));
        }
    }

    let vmlinuz = std::fs::read_dir(kroot.join("boot"))
        .map_err(|e| format!("no /boot in {pkg}: {e}"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .ok_or_else(|| format!("no /boot/vmlinuz-* in {pkg}"))?;
    let busybox = ["bin/busybox", "usr/bin/busybox"]
        .iter()
        .map(|p| broot.join(p))
        .find(|p| p.is_file())
        .ok_or("no busybox in busybox-static")?;
    let moddir = ["lib/modules", "usr/lib/modules"]
        .iter()
        .filter_map(|d| std::fs::read_dir(kroot.join(d)).ok())
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.join("kernel").is_dir())
        .ok_or_else(|| format!("no lib/modules/<version>/kernel in {pkg}"))?;
    let modules = resolve_modules(&moddir, &busybox)?;

    let mut cpio = Cpio::default();
    for d in [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "sbguest",
    ] {
        cpio.dir(d);
    }
    cpio.char_dev("dev/console", 5, 1);
    let bb = std::fs::read(&busybox).map_err(|e| format!("read busybox: {e}"))?;
    cpio.file("bin/busybox", 0o755, &bb);
    cpio.symlink("bin/sh", "busybox");
    cpio.file("init", 0o755, INIT.as_bytes());
    let mut order = String::new();
    for (i, (name, data)) in modules.iter().enumerate() {
        let file = format!("{i:02}-{name}.ko");
        cpio.file(&format!("sbguest/{file}"), 0o644, data);
        order.push_str(&file);
        order.push('\n');
    }
    cpio.file("sbguest/modules", 0o644, order.as_bytes());

    let out = work.join("out");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    std::fs::copy(&vmlinuz, out.join("vmlinuz")).map_err(|e| format!("copy kernel: {e}"))?;
    let mut f = File::create(out.join("initrd.cpio")).map_err(|e| e.to_string())?;
    f.write_all(&cpio.finish())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("write initrd: {e}"))?;
    std::fs::write(
        out.join("README"),
        format!(
            "switchboard test guest: {pkg} {version}, modules: {}\n",
            order.trim().replace('\n', " ")
        ),
    )
    .map_err(|e| e.to_string())?;
    Ok(out)
}

/// A module's name as the kernel knows it: file stem, `-` as `_`.
fn module_name(file: &Path) -> Option<String> {
    let name = file.file_name()?.to_str()?;
    let stem = name.split(".ko").next()?;
    (name.len() > stem.len()).then(|| stem.replace('-', "_"))
}

/// [`WANTED_MODULES`] and their dependencies that are modules in this
/// kernel, dependencies first, each as (name, uncompressed contents).
fn resolve_modules(moddir: &Path, busybox: &Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut files = std::collections::HashMap::new();
    let mut stack = vec![moddir.join("kernel")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))? {
            let p = e.map_err(|e| e.to_string())?.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(n) = module_name(&p) {
                files.insert(n, p);
            }
        }
    }
    let builtin: Vec<String> = std::fs::read_to_string(moddir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| module_name(Path::new(l)))
        .collect();

    // Depth-first, dependencies before dependents.
    fn visit(
        name: &str,
        files: &std::collections::HashMap<String, PathBuf>,
        builtin: &[String],
        busybox: &Path,
        out: &mut Vec<(String, Vec<u8>)>,
        depth: usize,
    ) -> Result<(), String> {
        if out.iter().any(|(n, _)| n == name) || builtin.iter().any(|b| b == name) {
            return Ok(());
        }
        if depth > 32 {
            return Err(format!("module dependency loop at {name}"));
        }
        let path = files
            .get(name)
            .ok_or_else(|| format!("module {name} is neither built in nor shipped"))?;
        let data = module_bytes(path, busybox)?;
        for dep in modinfo(&data, "depends")
            .unwrap_or_default()
            .split(',')
            .filter(|d| !d.is_empty())
        {
            visit(dep, files, builtin, busybox, out, depth + 1)?;
        }
        if !out.iter().any(|(n, _)| n == name) {
            out.push((name.to_string(), data));
        }
        Ok(())
    }
    let mut out = Vec::new();
    for m in WANTED_MODULES {
        visit(m, &files, &builtin, busybox, &mut out, 0)?;
    }
    Ok(out)
}

/// A module file's contents, decompressed (`.ko.xz` with the busybox we
/// ship, which runs on the host too; `.ko.zst`/`.ko.gz` with the host's
/// tools), since busybox `insmod` loads plain ELF only.
fn module_bytes(path: &Path, busybox: &Path) -> Result<Vec<u8>, String> {
    let name = path.to_string_lossy();
    let mut cmd = if name.ends_with(".ko") {
        return std::fs::read(path).map_err(|e| format!("read {name}: {e}"));
    } else if name.ends_with(".xz") {
        let mut c = Command::new(busybox);
        c.args(["xzcat"]);
        c
    } else if name.ends_with(".zst") {
        let mut c = Command::new("zstd");
        c.args(["-dc"]);
        c
    } else if name.ends_with(".gz") {
        let mut c = Command::new("gzip");
        c.args(["-dc"]);
        c
    } else {
        return Err(format!("unknown module compression: {name}"));
    };
    let out = cmd
        .arg(path)
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("decompress {name}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "decompress {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out.stdout)
}

/// `key=` from an ELF64 module's `.modinfo` section (NUL-separated
/// `key=value` strings), as `modinfo -F key` prints it.
fn modinfo(elf: &[u8], key: &str) -> Option<String> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?));
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None; // not little-endian ELF64
    }
    let shoff = usize::try_from(u64_at(0x28)?).ok()?;
    let shentsize = usize::from(u16_at(0x3a)?);
    let shnum = usize::from(u16_at(0x3c)?);
    let shstrndx = usize::from(u16_at(0x3e)?);
    let section = |i: usize| -> Option<(u32, usize, usize)> {
        let h = shoff + i * shentsize;
        Some((
            u32_at(h)?,
            usize::try_from(u64_at(h + 0x18)?).ok()?,
            usize::try_from(u64_at(h + 0x20)?).ok()?,
        ))
    };
    let (_, stroff, strsize) = section(shstrndx)?;
    let strtab = elf.get(stroff..stroff + strsize)?;
    let name_of = |off: u32| -> Option<&[u8]> {
        let s = strtab.get(off as usize..)?;
        Some(&s[..s.iter().position(|&b| b == 0)?])
    };
    (0..shnum).find_map(|i| {
        let (name, off, size) = section(i)?;
        if name_of(name)? != b".modinfo" {
            return None;
        }
        let prefix = format!("{key}=");
        elf.get(off..off + size)?
            .split(|&b| b == 0)
            .find_map(|kv| kv.strip_prefix(prefix.as_bytes()))
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}

/// A newc (`070701`) cpio archive, as the kernel unpacks an initramfs.
#[derive(Default)]
struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: reproducible
            u32::try_from(data.len()).expect("initramfs member under 4 GiB"),
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            u32::try_from(name.len() + 1).expect("short name"),
            0, // check
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }

    fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, (0, 0), target.as_bytes());
    }

    fn char_dev(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020600, (major, minor), &[]);
    }

    fn finish(mut self) -> Vec<u8> {
        self.ino = 0;
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.buf
    }
}
