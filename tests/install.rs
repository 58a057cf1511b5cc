//! `just install` (`scripts/install`) into a temporary `DESTDIR`: the binary, the first-party
//! plugins, the configuration derived from `policies/portcullis.toml` with system paths and
//! the systemd unit, each where docs/operating.md says; a second run changes nothing and an
//! edited configuration is kept; the result passes `portcullis check` and `systemd-analyze
//! verify`. No engine is needed.

use std::path::{Path, PathBuf};
use std::process::Command;

use portcullis::config::Address;
use portcullis::Config;
use portcullis_tests::{ok, portcullis_bin, run, sha256_file, text, workspace};

/// The plugins the shipped configuration names, built by `just plugins`.
const PLUGINS: [&str; 4] = ["labels", "tenancy", "baseline", "redact"];

/// Runs the install into `destdir` with the binary the tests use; returns what it printed.
fn install(destdir: &Path) -> String {
    ok(Command::new(workspace().join("scripts/install"))
        .arg("--bin")
        .arg(portcullis_bin())
        .env("DESTDIR", destdir)
        .env_remove("PREFIX"))
}

/// The lines the install printed about `path` (below `destdir`).
fn said<'a>(out: &'a str, destdir: &Path, path: &str) -> Vec<&'a str> {
    let full = format!("install: {}{path}", destdir.display());
    out.lines()
        .filter(|l| l.starts_with(&full) && l[full.len()..].starts_with([':', ' ']))
        .collect()
}

#[test]
fn install_puts_binary_plugins_config_and_unit_where_a_system_keeps_them() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    let out = install(d);

    let bin = d.join("usr/local/bin/portcullis");
    assert_eq!(sha256_file(&bin), sha256_file(&portcullis_bin()));
    for name in PLUGINS {
        let installed = d.join(format!("usr/local/lib/portcullis/plugins/{name}.wasm"));
        let built = workspace().join(format!("policies/plugins/{name}.wasm"));
        assert_eq!(sha256_file(&installed), sha256_file(&built), "{name}");
    }
    // The config names its plugins as the shipped one does, relative to itself, through a
    // relative link that holds inside DESTDIR as it will at /.
    assert_eq!(
        std::fs::read_link(d.join("etc/portcullis/plugins")).unwrap(),
        Path::new("../../usr/local/lib/portcullis/plugins")
    );
    assert!(d.join("etc/systemd/system/portcullis.service").is_file());
    assert!(d.join("var/lib/portcullis/spool").is_dir());

    // The installed config is the shipped one with system paths, and nothing else changed.
    let config = d.join("etc/portcullis/portcullis.toml");
    let installed = Config::load(&config).expect("the installed config loads");
    let shipped = Config::load(&workspace().join("policies/portcullis.toml")).unwrap();
    let unix = |p: &str| Address::Unix(PathBuf::from(p));
    assert_eq!(
        installed.server.listen,
        [unix("/run/portcullis/portcullis.sock")]
    );
    assert_eq!(
        installed.admin.as_ref().map(|a| a.listen.clone()),
        Some(unix("/run/portcullis/admin.sock"))
    );
    assert_eq!(installed.engine.url, unix("/var/run/docker.sock"));
    let path_of = |p: Option<&PathBuf>| p.map(|p| p.display().to_string());
    assert_eq!(
        path_of(installed.audit.as_ref().map(|a| &a.path)).as_deref(),
        Some("/var/lib/portcullis/audit")
    );
    assert_eq!(
        path_of(installed.owners.as_ref().map(|o| &o.path)).as_deref(),
        Some("/var/lib/portcullis/owners")
    );
    assert_eq!(
        path_of(installed.runtime.cache_dir.as_ref()).as_deref(),
        Some("/var/cache/portcullis/plugins")
    );
    assert_eq!(
        installed.limits.spool_dir,
        Path::new("/var/lib/portcullis/spool")
    );
    for plugin in &installed.plugins {
        assert!(
            installed.plugin_path(plugin).is_file(),
            "{} is not installed",
            plugin.name
        );
    }
    assert_eq!(
        format!("{:?}", with_paths_of(installed, &shipped)),
        format!("{shipped:?}"),
        "the installed config differs from policies/portcullis.toml in more than its paths"
    );

    // The install checked it; so does this.
    assert!(out.contains("install: check: "), "{out}");
    let check = ok(Command::new(&bin).arg("check").arg("--config").arg(&config));
    assert!(check.contains("ok (4 plugins)"), "{check}");
    // Not booted with systemd here, or staged: it says what to run instead of starting it.
    assert!(out.contains("systemctl enable --now portcullis"), "{out}");
}

/// `config` with the settings the derivation changes taken from `from`.
fn with_paths_of(mut config: Config, from: &Config) -> Config {
    config.server.listen = from.server.listen.clone();
    config.engine.url = from.engine.url.clone();
    config.limits.spool_dir = from.limits.spool_dir.clone();
    config.runtime.cache_dir = from.runtime.cache_dir.clone();
    config.admin = from.admin.clone();
    config.base_dir = from.base_dir.clone();
    if let (Some(a), Some(b)) = (&mut config.audit, &from.audit) {
        a.path = b.path.clone();
    }
    if let (Some(a), Some(b)) = (&mut config.owners, &from.owners) {
        a.path = b.path.clone();
    }
    config
}

#[test]
fn reinstalling_changes_nothing_and_keeps_an_edited_config() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    install(d);
    let config = d.join("etc/portcullis/portcullis.toml");
    let new = d.join("etc/portcullis/portcullis.toml.new");
    let default = std::fs::read_to_string(&config).unwrap();

    // Again: every file is left as it is.
    let out = install(d);
    for path in [
        "/usr/local/bin/portcullis",
        "/usr/local/lib/portcullis/plugins/baseline.wasm",
        "/etc/portcullis/portcullis.toml",
        "/etc/systemd/system/portcullis.service",
    ] {
        let lines = said(&out, d, path);
        assert_eq!(lines.len(), 1, "{path}: {out}");
        assert!(lines[0].ends_with(": unchanged"), "{}", lines[0]);
    }
    assert!(!out.lines().any(|l| l.ends_with(": installed")), "{out}");
    assert!(!new.exists());

    // An operator's edit survives; the default lands next to it, checked too.
    let edited = format!("{default}\n# allowed_bind_paths for the CI runners: ticket 42\n");
    std::fs::write(&config, &edited).unwrap();
    let out = install(d);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);
    assert_eq!(std::fs::read_to_string(&new).unwrap(), default);
    assert!(out.contains("portcullis.toml.new"), "{out}");
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("install: check: "))
            .count(),
        2,
        "both the edited config and the new default are checked: {out}"
    );
    // And again: still kept, nothing else moves.
    install(d);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);

    // Back to the default by hand: the stale .new goes.
    std::fs::write(&config, &default).unwrap();
    let out = install(d);
    assert!(!new.exists(), "{out}");
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    install(d);
    let unit = std::fs::read_to_string(d.join("etc/systemd/system/portcullis.service")).unwrap();
    for line in [
        "ExecStart=/usr/local/bin/portcullis serve --config /etc/portcullis/portcullis.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "RuntimeDirectory=portcullis",
        "NoNewPrivileges=true",
    ] {
        assert!(unit.lines().any(|l| l == line), "no {line:?} in the unit");
    }
    // verify wants the ExecStart binary to exist: a copy of the unit names the staged one.
    let staged = d.join("usr/local/bin/portcullis").display().to_string();
    let copy = d.join("portcullis.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/portcullis", &staged)).unwrap();
    let out = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .env("SYSTEMD_LOG_LEVEL", "notice"));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(text(&out).trim(), "", "systemd-analyze verify warned");
}

#[test]
fn install_honours_prefix() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    ok(Command::new(workspace().join("scripts/install"))
        .arg("--bin")
        .arg(portcullis_bin())
        .env("DESTDIR", d)
        .env("PREFIX", "/opt/portcullis"));
    assert!(d.join("opt/portcullis/bin/portcullis").is_file());
    assert_eq!(
        std::fs::read_link(d.join("etc/portcullis/plugins")).unwrap(),
        Path::new("../../opt/portcullis/lib/portcullis/plugins")
    );
    let unit = std::fs::read_to_string(d.join("etc/systemd/system/portcullis.service")).unwrap();
    assert!(unit.contains("ExecStart=/opt/portcullis/bin/portcullis serve"));
    assert!(!unit.contains("/usr/local/"), "{unit}");
}

/// A stand-in for a program on PATH: a shell script that appends its name and arguments to
/// `log` and runs `then`.
fn stub(dir: &Path, name: &str, log: &Path, then: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\necho \"{name} $*\" >> '{}'\n{then}\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `scripts/up` with PATH holding only `dir` and `cargo_home/bin` (a `just` the machine has
/// elsewhere must not be found).
fn up(dir: &Path, cargo_home: &Path) -> String {
    let path = format!("{}:{}/bin", dir.display(), cargo_home.display());
    ok(Command::new(workspace().join("scripts/up"))
        .arg("--extra")
        .env("PATH", path)
        .env("CARGO_HOME", cargo_home)
        .env("HOME", cargo_home))
}

#[test]
fn up_installs_just_when_it_is_missing_then_runs_just_up() {
    let tmp = tempfile::tempdir().unwrap();
    let (tools, home) = (tmp.path().join("tools"), tmp.path().join("cargo"));
    std::fs::create_dir_all(&tools).unwrap();
    std::fs::create_dir_all(home.join("bin")).unwrap();
    // What the script and the stubs run, and nothing else.
    for tool in ["bash", "sh", "env", "dirname", "chmod"] {
        let found = ok(Command::new("sh").args(["-c", &format!("command -v {tool}")]));
        std::os::unix::fs::symlink(found.trim(), tools.join(tool)).unwrap();
    }
    let log = tmp.path().join("log");
    // `cargo install just` puts a `just` into $CARGO_HOME/bin, as the real one does.
    let just = format!(
        "printf '#!/bin/sh\\necho \"just $*\" >> {}\\n' > {home}/bin/just && chmod +x {home}/bin/just",
        log.display(),
        home = home.display()
    );
    stub(&tools, "cargo", &log, &just);

    let out = up(&tools, &home);
    assert!(out.contains("installing just"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "cargo install just --locked\njust up --extra\n"
    );

    // With just there, cargo is not asked again.
    std::fs::remove_file(&log).unwrap();
    up(&tools, &home);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "just up --extra\n");
}
