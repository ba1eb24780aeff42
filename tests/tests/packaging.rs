//! The Debian package and its systemd unit: the unit passes `systemd-analyze verify`, and the
//! package installs with dpkg into a scratch root that holds every file where the operators'
//! guide says, the policy marked as a conffile.
//!
//! The package is `PORTGUARD_DEB` (`cargo xtask test` builds one from the debug agent and sets
//! it); without it, the test builds one itself with `cargo xtask package`.

use std::{
    ffi::OsStr,
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{Context as _, bail, ensure};
use portguard_tests::{portguard_bin, require_root};
use tempfile::TempDir;

/// What the package installs, beside the files compared with packaging/ byte for byte.
const BINARY: &str = "usr/bin/portguard";
const UNIT: &str = "lib/systemd/system/portguard.service";
const POLICY: &str = "etc/portguard/policy.toml";
const MAN_PAGE: &str = "usr/share/man/man1/portguard.1.gz";
/// Each completion file, and what it must say.
const COMPLETIONS: [(&str, &str); 3] = [
    (
        "usr/share/bash-completion/completions/portguard",
        "complete -F _portguard",
    ),
    (
        "usr/share/zsh/vendor-completions/_portguard",
        "#compdef portguard",
    ),
    (
        "usr/share/fish/vendor_completions.d/portguard.fish",
        "complete -c portguard",
    ),
];

#[test]
fn the_unit_passes_systemd_analyze_verify() -> anyhow::Result<()> {
    require_root()?;
    if !systemd_analyze_present()? {
        return Ok(());
    }

    // A root holding what the unit refers to: the agent where ExecStart= runs it, kill where
    // ExecReload= does, and the man page that Documentation= names.
    let root = Scratch::new("portguard-unit-")?;
    let unit_dir = root.create_dir("etc/systemd/system")?;
    fs::copy(
        repo_file("packaging/portguard.service"),
        unit_dir.join("portguard.service"),
    )
    .context("copy the unit")?;
    root.copy_executable(&portguard_bin()?, BINARY)?;
    let man_dir = root.create_dir("usr/share/man/man1")?;
    run(Command::new(portguard_bin()?)
        .args(["generate", "man", "--out"])
        .arg(&man_dir))?;

    verify_unit(root.path())
}

#[test]
fn the_package_installs_into_a_scratch_root() -> anyhow::Result<()> {
    require_root()?;
    let build = TempDir::with_prefix("portguard-deb-").context("create a folder")?;
    let deb = package(build.path())?;
    eprintln!("package: {}", deb.display());

    let root = Scratch::new("portguard-dpkg-")?;
    root.prepare_dpkg(&deb)?;
    let installed = dpkg(&root, &[OsStr::new("--install"), deb.as_os_str()])?;
    eprintln!("{}", text(&installed));

    // What dpkg recorded: installed, and the policy a conffile, so that upgrades keep edits.
    let status = text(&dpkg(&root, &["--status", "portguard"])?);
    ensure!(
        status.contains("Status: install ok installed"),
        "the package is not installed:\n{status}"
    );
    let conffiles = status
        .split("Conffiles:\n")
        .nth(1)
        .with_context(|| format!("no Conffiles in the package's status:\n{status}"))?;
    ensure!(
        conffiles.starts_with(" /etc/portguard/policy.toml "),
        "the policy is not a conffile:\n{status}"
    );
    let listed = text(&dpkg(&root, &["--listfiles", "portguard"])?);
    for file in [BINARY, UNIT, POLICY, MAN_PAGE]
        .into_iter()
        .chain(COMPLETIONS.map(|(file, _)| file))
    {
        ensure!(
            listed.lines().any(|line| line == format!("/{file}")),
            "dpkg does not list /{file}:\n{listed}"
        );
        ensure!(root.file(file).is_file(), "/{file} is not installed");
    }
    // Every installed file matches its checksum in the package.
    let verified = dpkg(&root, &["--verify", "portguard"])?;
    ensure!(
        text(&verified).trim().is_empty(),
        "dpkg --verify finds installed files that differ from the package:\n{}",
        text(&verified)
    );

    // The binary runs, and is the package's version.
    let version = text(&run(Command::new(root.file(BINARY)).arg("--version"))?);
    let package_version = field(&status, "Version")?;
    let upstream = package_version
        .rsplit_once('-')
        .map_or(package_version, |(upstream, _)| upstream);
    // "portguard 0.1.0", maybe followed by build details.
    let version = version.trim();
    let expected = format!("portguard {upstream}");
    ensure!(
        version == expected || version.starts_with(&format!("{expected} ")),
        "portguard --version says {version:?}, the package is {package_version}"
    );

    // The unit and the default policy are the repository's, and the policy is valid.
    for (installed, source) in [
        (UNIT, "packaging/portguard.service"),
        (POLICY, "packaging/policy.toml"),
    ] {
        ensure!(
            fs::read(root.file(installed))? == fs::read(repo_file(source))?,
            "/{installed} differs from {source}: the package is stale, rebuild it with \
             `cargo xtask package`"
        );
    }
    run(Command::new(root.file(BINARY))
        .arg("check")
        .arg("--policy")
        .arg(root.file(POLICY)))?;

    // The man page is a man page of portguard, the completions complete portguard.
    let man = text(&run(Command::new("gzip")
        .arg("-dc")
        .arg(root.file(MAN_PAGE)))?);
    ensure!(
        man.contains(".TH portguard 1"),
        "the man page has no .TH portguard 1 header"
    );
    for (file, says) in COMPLETIONS {
        let completion = fs::read_to_string(root.file(file))?;
        ensure!(completion.contains(says), "/{file} does not say {says:?}");
    }

    // The unit as installed passes systemd's own check, finding the installed binary and
    // man page.
    if systemd_analyze_present()? {
        verify_unit(root.path())?;
    }

    // Removing keeps the edited conffile; purging removes it.
    fs::write(
        root.file(POLICY),
        fs::read_to_string(root.file(POLICY))? + "\n# edited\n",
    )?;
    dpkg(&root, &["--remove", "portguard"])?;
    ensure!(!root.file(BINARY).exists(), "--remove left /{BINARY}");
    ensure!(
        fs::read_to_string(root.file(POLICY))?.ends_with("# edited\n"),
        "--remove did not keep the edited policy"
    );
    dpkg(&root, &["--purge", "portguard"])?;
    ensure!(!root.file(POLICY).exists(), "--purge left /{POLICY}");
    Ok(())
}

/// `systemd-analyze verify` of portguard.service as found under `root`, which must print
/// nothing at all: no warning is expected, so none is ignored.
fn verify_unit(root: &Path) -> anyhow::Result<()> {
    let mut verify = Command::new("systemd-analyze");
    verify
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        // systemd-analyze checks Documentation=man:portguard(1) by running man: on this
        // root's man pages.
        .env("MANPATH", root.join("usr/share/man"));
    if !on_path("man") {
        eprintln!("note: man is not installed: Documentation= is not checked (--man=no)");
        verify.arg("--man=no");
    }
    verify.arg("portguard.service");
    eprintln!("{verify:?}");
    let output = verify.output().context("run systemd-analyze")?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    ensure!(
        output.status.success() && said.trim().is_empty(),
        "systemd-analyze verify ({}) says:\n{said}",
        output.status
    );
    Ok(())
}

/// Whether `systemd-analyze` is installed. Missing, the unit tests are skipped, except in CI
/// (`CI` set), where `cargo xtask setup` installs systemd and a skip would hide a failure.
fn systemd_analyze_present() -> anyhow::Result<bool> {
    if on_path("systemd-analyze") {
        return Ok(true);
    }
    if std::env::var_os("CI").is_some() {
        bail!("systemd-analyze is not installed, and CI must run this test: `cargo xtask setup`");
    }
    eprintln!(
        "SKIPPED: systemd-analyze is not installed (apt-get install systemd, or `cargo xtask \
         setup`): the unit is not verified"
    );
    Ok(false)
}

/// The package to test: `PORTGUARD_DEB`, else one built into `out` by `cargo xtask package`
/// from the same build of the agent that the other tests use.
fn package(out: &Path) -> anyhow::Result<PathBuf> {
    if let Some(deb) = std::env::var_os("PORTGUARD_DEB") {
        let deb = PathBuf::from(deb);
        ensure!(
            deb.is_file(),
            "PORTGUARD_DEB is {}, not a file",
            deb.display()
        );
        return Ok(deb);
    }

    let profile = match portguard_bin()?.parent().and_then(Path::file_name) {
        Some(dir) if dir == "release" => "release",
        _ => "dev",
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(Command::new(cargo)
        .args(["xtask", "package", "--profile", profile, "--output"])
        .arg(out)
        .current_dir(repo_file("")))?;
    let mut debs = fs::read_dir(out)?
        .map(|entry| Ok(entry?.path()))
        .collect::<std::io::Result<Vec<_>>>()?;
    debs.retain(|path| path.extension() == Some(OsStr::new("deb")));
    match debs.as_slice() {
        [deb] => Ok(deb.clone()),
        _ => bail!("expected one .deb in {}, found {debs:?}", out.display()),
    }
}

/// A scratch root folder, removed on drop with everything installed into it.
struct Scratch {
    dir: TempDir,
}

impl Scratch {
    fn new(prefix: &str) -> anyhow::Result<Self> {
        let dir = TempDir::with_prefix(prefix).context("create a scratch root")?;
        Ok(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `relative` inside the root.
    fn file(&self, relative: &str) -> PathBuf {
        self.path().join(relative)
    }

    fn create_dir(&self, relative: &str) -> anyhow::Result<PathBuf> {
        let dir = self.file(relative);
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(dir)
    }

    fn copy_executable(&self, from: &Path, relative: &str) -> anyhow::Result<()> {
        let to = self.file(relative);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::copy(from, &to)
            .with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
        Ok(())
    }

    /// An empty dpkg database, but for the packages that `deb` depends on: their status is
    /// copied from the host's, where they are installed, so that dpkg checks the dependencies
    /// for real rather than being told to ignore them (--force-depends).
    fn prepare_dpkg(&self, deb: &Path) -> anyhow::Result<()> {
        let admin = self.create_dir("var/lib/dpkg")?;
        for dir in ["info", "updates", "triggers", "alternatives"] {
            fs::create_dir_all(admin.join(dir))?;
        }
        fs::write(admin.join("available"), "")?;

        let depends = text(&run(Command::new("dpkg-deb")
            .args(["--field"])
            .arg(deb)
            .arg("Depends"))?);
        let mut status = String::new();
        for name in dependency_names(&depends) {
            let stanza = text(&run(Command::new("dpkg-query").args(["--status", &name]))?);
            // A package of several architectures records its files as NAME:ARCH.list.
            let list = match stanza.contains("\nMulti-Arch: same\n") {
                true => format!("{name}:{}.list", field(&stanza, "Architecture")?),
                false => format!("{name}.list"),
            };
            fs::write(admin.join("info").join(list), "")?;
            status.push_str(stanza.trim_end());
            status.push_str("\n\n");
        }
        fs::write(admin.join("status"), status)?;
        Ok(())
    }
}

/// The package names in a Depends field: "libc6 (>= 2.34), procps" → libc6, procps. Of
/// alternatives ("a | b") the first installed one counts.
fn dependency_names(depends: &str) -> Vec<String> {
    depends
        .split(',')
        .filter_map(|alternatives| {
            let names: Vec<&str> = alternatives
                .split('|')
                .filter_map(|one| one.split_whitespace().next())
                .map(|name| name.split(':').next().unwrap_or(name))
                .collect();
            names
                .iter()
                .find(|name| installed_on_host(name))
                .or(names.first())
                .map(|name| (*name).to_owned())
        })
        .collect()
}

fn installed_on_host(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["--show", "--showformat=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout) == "install ok installed")
}

/// dpkg on the scratch root, with its log there too, so that nothing of the host changes.
fn dpkg(root: &Scratch, args: &[impl AsRef<OsStr>]) -> anyhow::Result<Output> {
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.path().display()))
        .arg(format!("--log={}", root.file("dpkg.log").display()))
        .args(args))
}

/// Runs `command`; fails with what it printed unless it exits 0.
fn run(command: &mut Command) -> anyhow::Result<Output> {
    let output = command
        .output()
        .with_context(|| format!("run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output)
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The value of `name:` in a dpkg stanza.
fn field<'s>(stanza: &'s str, name: &str) -> anyhow::Result<&'s str> {
    stanza
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
        .map(str::trim)
        .with_context(|| format!("no {name} in:\n{stanza}"))
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// A file of the repository.
fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}
