//! `baseline`: denies the host-escape features of the Docker Engine API.
//!
//! Anyone who can create a container with `--privileged`, `-v /:/host`, `--pid host` or
//! `--cap-add SYS_ADMIN` is root on the host. This plugin refuses those forms everywhere the
//! engine accepts them (container create and update, exec, Swarm services, `local` volumes,
//! build options) and limits host-administration endpoints (plugins, swarm, nodes) to
//! administrators. Every denial names the rule and the field, and lists every violation of
//! the request at once:
//!
//! ```text
//! baseline: [privileged] HostConfig.Privileged is true; [bind-mounts] HostConfig.Binds[0]: host path "/" is outside the allowed paths
//! ```
//!
//! Rules judge values, never the presence of keys: docker-py sends `"Privileged": false`
//! and `"CapAdd": null`, which pass.
//!
//! # Rules
//!
//! | rule | what it denies |
//! |---|---|
//! | `privileged` | `HostConfig.Privileged`, exec `Privileged` |
//! | `host-namespaces` | `host` PID/IPC/UTS/network/user/cgroup namespace modes, `container:<id>` joins (PID, IPC, network), build `networkmode=host`, services on the `host` network (by name or by id) |
//! | `bind-mounts` | host paths outside `allowed_bind_paths` in `HostConfig.Binds`, `HostConfig.Mounts` of type `bind`, service mounts |
//! | `volume-options` | `local` volume driver options that mount host paths or filesystems: `type`, `device`, `o=bind` (in `volume.create` and in volume mounts' `DriverConfig`) |
//! | `volumes-from` | `HostConfig.VolumesFrom` (mounts another container's volumes, including its binds) |
//! | `capabilities` | added capabilities outside `allowed_capabilities` (`ALL` included) |
//! | `devices` | `Devices`, `DeviceRequests` (GPUs), `DeviceCgroupRules` |
//! | `security-options` | `seccomp=unconfined`, `apparmor=unconfined`, `label=disable` / `label:disable`, `systempaths=unconfined` (as an option, or as `MaskedPaths`/`ReadonlyPaths` lists without the default paths); the service equivalents in `Privileges` |
//! | `sysctls` | sysctls outside `allowed_sysctls` |
//! | `runtime` | a runtime outside `allowed_runtimes`; service tasks of runtime `plugin` |
//! | `read-only` | anything but `GET`/`HEAD` from callers in `read_only_users` / `read_only_groups` (give this plugin every endpoint, `endpoints = ["*"]`, to use it) |
//! | `build-entitlements` | BuildKit builds (`build.solve`) of non-administrators with entitlements (`--allow network.host`, `--allow security.insecure`, any other) or host network steps (`--network host`) |
//! | `raw-llb` | BuildKit builds of non-administrators without a frontend (raw LLB): they can name any source, another user's session included; `disabled_rules = ["raw-llb"]` lets them through |
//! | `host-admin` | `admin_endpoints` (plugin install/upgrade/set/enable, swarm init/join/leave/inspect/update, node update/remove, ...) unless the caller is in `admin_group` or `admin_users` |
//!
//! Bind sources are normalised lexically (`//`, `.`, `..`) before the allow-list check;
//! symlinks are resolved by the gateway before plugins run.

use std::collections::BTreeMap;

use portcullis_plugin::docker::{ContainerSpec, HostConfig, Mount};
use portcullis_plugin::prelude::*;
use serde::Deserialize;

/// Every rule, by the name used in configuration and messages.
pub const RULES: [&str; 14] = [
    "privileged",
    "host-namespaces",
    "bind-mounts",
    "volume-options",
    "volumes-from",
    "capabilities",
    "devices",
    "security-options",
    "sysctls",
    "runtime",
    "host-admin",
    "read-only",
    "build-entitlements",
    "raw-llb",
];

/// Docker's default capability set: adding one of these changes nothing.
const DOCKER_DEFAULT_CAPS: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// The endpoints that administer the host rather than one's own containers. `swarm.inspect`
/// is among them because its answer carries the join tokens: a manager token lets its holder
/// add a node of their own as a manager, and with it run anything on every node.
const ADMIN_ENDPOINTS: [&str; 20] = [
    "plugin.pull",
    "plugin.upgrade",
    "plugin.set",
    "plugin.enable",
    "plugin.disable",
    "plugin.create",
    "plugin.delete",
    "plugin.push",
    "swarm.init",
    "swarm.join",
    "swarm.leave",
    "swarm.inspect",
    "swarm.update",
    "swarm.unlock",
    "swarm.unlockkey",
    "node.update",
    "node.delete",
    "container.checkpoint.create",
    "container.checkpoint.delete",
    "build.prune",
];

/// The plugin's `config` table. Every key is optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Rules switched off, by name (see [`RULES`]).
    pub disabled_rules: Vec<String>,
    /// Host paths that may be bind-mounted, with everything under them. Default none.
    pub allowed_bind_paths: Vec<String>,
    /// Capabilities that may be added (with or without `CAP_`). Default: Docker's default
    /// set, which adding does not widen.
    pub allowed_capabilities: Vec<String>,
    /// Sysctls that may be set (exact names, or a prefix ending in `*`). Default none.
    pub allowed_sysctls: Vec<String>,
    /// OCI runtimes that may be chosen. The engine's default (no runtime given) always
    /// passes. Default `["runc"]`.
    pub allowed_runtimes: Vec<String>,
    /// `local` volume types (`type=` option) that may be created, e.g. `["tmpfs"]`.
    /// Default none.
    pub allowed_volume_types: Vec<String>,
    /// Allow `container:<id>` namespace joins (PID, IPC, network). Default false: joining
    /// another container's namespaces reaches into it whoever owns it.
    pub allow_container_joins: bool,
    /// Endpoints only administrators may call (exact names or `prefix.*`).
    pub admin_endpoints: Vec<String>,
    /// The group whose members are administrators.
    pub admin_group: String,
    /// Users who are administrators regardless of groups (e.g. `uid:0` for unix peers).
    pub admin_users: Vec<String>,
    /// Users who may only read (`GET` and `HEAD` requests).
    pub read_only_users: Vec<String>,
    /// Groups whose members may only read.
    pub read_only_groups: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            disabled_rules: Vec::new(),
            allowed_bind_paths: Vec::new(),
            allowed_capabilities: DOCKER_DEFAULT_CAPS.iter().map(|s| s.to_string()).collect(),
            allowed_sysctls: Vec::new(),
            allowed_runtimes: vec!["runc".into()],
            allowed_volume_types: Vec::new(),
            allow_container_joins: false,
            admin_endpoints: ADMIN_ENDPOINTS.iter().map(|s| s.to_string()).collect(),
            admin_group: "docker-admin".into(),
            admin_users: Vec::new(),
            read_only_users: Vec::new(),
            read_only_groups: Vec::new(),
        }
    }
}

/// The baseline plugin.
pub struct Baseline {
    config: Config,
}

/// Violations found in one request, each `[rule] message`.
struct Findings<'a> {
    config: &'a Config,
    list: Vec<String>,
}

impl Findings<'_> {
    fn on(&self, rule: &str) -> bool {
        !self.config.disabled_rules.iter().any(|r| r == rule)
    }
    fn add(&mut self, rule: &str, message: String) {
        if self.on(rule) {
            self.list.push(format!("[{rule}] {message}"));
        }
    }
}

impl Plugin for Baseline {
    const NAME: &'static str = "baseline";
    const HOOKS: Hooks = Hooks::REQUEST;

    fn new(config: Value) -> Result<Self, String> {
        let config: Config = if config.is_null() {
            Config::default()
        } else {
            serde_json::from_value(config).map_err(|e| format!("baseline config: {e}"))?
        };
        for rule in &config.disabled_rules {
            if !RULES.contains(&rule.as_str()) {
                return Err(format!(
                    "baseline config: disabled_rules: unknown rule {rule:?} (rules: {})",
                    RULES.join(", ")
                ));
            }
        }
        for p in &config.allowed_bind_paths {
            if clean_path(p).is_none() {
                return Err(format!(
                    "baseline config: allowed_bind_paths: {p:?} is not an absolute path"
                ));
            }
        }
        Ok(Baseline { config })
    }

    fn on_request(&self, req: &Request) -> Verdict {
        let mut f = Findings {
            config: &self.config,
            list: Vec::new(),
        };
        self.check(req, &mut f);
        if f.list.is_empty() {
            Verdict::Allow
        } else {
            Verdict::deny(f.list.join("; "))
        }
    }
}

impl Baseline {
    fn check(&self, req: &Request, f: &mut Findings) {
        let endpoint = req.endpoint.as_str();
        let c = &self.config;
        let read_only = c.read_only_users.contains(&req.caller.user)
            || c.read_only_groups.iter().any(|g| req.caller.in_group(g));
        if read_only && !matches!(req.method.as_str(), "GET" | "HEAD") {
            f.add(
                "read-only",
                format!(
                    "{} may only read; {} {endpoint} changes state",
                    req.caller.user, req.method
                ),
            );
        }
        if self.is_admin_endpoint(endpoint) && !self.is_admin(req) {
            f.add(
                "host-admin",
                format!(
                    "{endpoint} administers the host and is limited to the {:?} group",
                    self.config.admin_group
                ),
            );
        }
        let unreadable = |f: &mut Findings, what: &str| {
            // dockerd refuses such a body too; refusing it here keeps the rule "what the
            // engine acts on is what was checked" without guessing.
            if req.body.is_some() {
                f.list.push(format!(
                    "[body] the {what} body cannot be read as Docker's {what} config"
                ));
            }
        };
        match endpoint {
            "container.create" => match req.container_create() {
                Some(c) => {
                    self.host_config(&c.host_config, "HostConfig.", f);
                    system_paths(&c.host_config, f);
                }
                None => unreadable(f, "container"),
            },
            "container.update" => match req.body_as::<HostConfig>() {
                // The update body is Resources and RestartPolicy inline; its device fields
                // have HostConfig's names.
                Some(h) => self.devices(&h, "", f),
                None => unreadable(f, "update"),
            },
            "container.exec" => match req.exec_create() {
                Some(e) if e.privileged => {
                    f.add("privileged", "Privileged is true (privileged exec)".into())
                }
                Some(_) => {}
                None => unreadable(f, "exec"),
            },
            "service.create" | "service.update" => match (req.service_spec(), req.json_body()) {
                (Some(s), Some(raw)) => {
                    self.container_spec(&s.task_template.container_spec, f);
                    let runtime = &s.task_template.runtime;
                    if runtime == "plugin" {
                        f.add(
                            "runtime",
                            "TaskTemplate.Runtime is \"plugin\" (installs an engine plugin)".into(),
                        );
                    }
                    self.service_networks(req, &raw, f);
                }
                _ => unreadable(f, "service"),
            },
            "volume.create" => {
                let body = req.json_body().unwrap_or(Value::Null);
                let driver = body.get("Driver").and_then(Value::as_str).unwrap_or("");
                let opts = string_map(body.get("DriverOpts"));
                self.volume_options(driver, &opts, "DriverOpts", f);
            }
            "build.solve" => match req.json_body() {
                Some(body) => self.build_solve(req, &body, f),
                None => unreadable(f, "build.solve"),
            },
            "image.build" if req.query("networkmode") == Some("host") => {
                f.add(
                    "host-namespaces",
                    "networkmode is \"host\" (build steps in the host network)".into(),
                );
            }
            _ => {}
        }
    }

    /// A BuildKit build: what it may do beyond its own sandbox is for administrators.
    fn build_solve(&self, req: &Request, body: &Value, f: &mut Findings) {
        if self.is_admin(req) {
            return;
        }
        let entitlements = body.get("Entitlements").and_then(Value::as_array);
        for e in entitlements.into_iter().flatten().filter_map(Value::as_str) {
            let what = match e {
                "network.host" => "build steps in the host network".to_owned(),
                "security.insecure" => "privileged build steps".to_owned(),
                other => format!("entitlement {other:?}"),
            };
            f.add(
                "build-entitlements",
                format!(
                    "--allow {e} ({what}) is limited to the {:?} group",
                    self.config.admin_group
                ),
            );
        }
        if body.get("NetworkMode").and_then(Value::as_str) == Some("host") {
            f.add(
                "build-entitlements",
                format!(
                    "--network host (build steps in the host network) is limited to the {:?} group",
                    self.config.admin_group
                ),
            );
        }
        if body.get("RawLLB").and_then(Value::as_bool) == Some(true) {
            f.add(
                "raw-llb",
                "a build without a frontend (raw LLB) can name any source, another user's session included; only administrators send one".into(),
            );
        }
    }

    fn is_admin_endpoint(&self, endpoint: &str) -> bool {
        self.config
            .admin_endpoints
            .iter()
            .any(|e| match e.strip_suffix('*') {
                Some(prefix) => endpoint.starts_with(prefix),
                None => e == endpoint,
            })
    }

    fn is_admin(&self, req: &Request) -> bool {
        (!self.config.admin_group.is_empty() && req.caller.in_group(&self.config.admin_group))
            || self.config.admin_users.contains(&req.caller.user)
    }

    /// The checks of a container's `HostConfig`; `at` prefixes field names in messages.
    fn host_config(&self, h: &HostConfig, at: &str, f: &mut Findings) {
        if h.privileged {
            f.add("privileged", format!("{at}Privileged is true"));
        }
        let modes = [
            ("NetworkMode", &h.network_mode, true),
            ("PidMode", &h.pid_mode, true),
            ("IpcMode", &h.ipc_mode, true),
            ("UTSMode", &h.uts_mode, false),
            ("UsernsMode", &h.userns_mode, false),
            ("CgroupnsMode", &h.cgroupns_mode, false),
        ];
        for (field, value, joinable) in modes {
            if value == "host" {
                f.add(
                    "host-namespaces",
                    format!("{at}{field} is \"host\" (the host's namespace)"),
                );
            } else if joinable
                && value.starts_with("container:")
                && !self.config.allow_container_joins
            {
                f.add(
                    "host-namespaces",
                    format!("{at}{field} is {value:?} (joins another container's namespace)"),
                );
            }
        }
        for (i, bind) in h.binds.iter().enumerate() {
            // `[source:]target[:options]`: a source that is an absolute path is a host path,
            // anything else names a volume.
            if let Some((source, _)) = bind.split_once(':') {
                if source.starts_with('/') {
                    self.bind_source(source, &format!("{at}Binds[{i}]"), f);
                }
            }
        }
        self.mounts(&h.mounts, &format!("{at}Mounts"), f);
        if !h.volumes_from.is_empty() {
            f.add(
                "volumes-from",
                format!(
                    "{at}VolumesFrom is {:?} (mounts another container's volumes and binds)",
                    h.volumes_from
                ),
            );
        }
        self.capabilities(&h.cap_add, &format!("{at}CapAdd"), f);
        self.devices(h, at, f);
        for (i, opt) in h.security_opt.iter().enumerate() {
            if let Some(why) = unconfined(opt) {
                f.add(
                    "security-options",
                    format!("{at}SecurityOpt[{i}] is {opt:?} ({why})"),
                );
            }
        }
        self.sysctls(&h.sysctls, &format!("{at}Sysctls"), f);
        if !h.runtime.is_empty() && !self.config.allowed_runtimes.contains(&h.runtime) {
            f.add(
                "runtime",
                format!(
                    "{at}Runtime {:?} is not one of the allowed runtimes {:?}",
                    h.runtime, self.config.allowed_runtimes
                ),
            );
        }
    }

    fn devices(&self, h: &HostConfig, at: &str, f: &mut Findings) {
        for (i, d) in h.devices.iter().enumerate() {
            f.add(
                "devices",
                format!("{at}Devices[{i}] maps host device {:?}", d.path_on_host),
            );
        }
        for (i, d) in h.device_requests.iter().enumerate() {
            f.add(
                "devices",
                format!(
                    "{at}DeviceRequests[{i}] requests devices (driver {:?})",
                    d.driver
                ),
            );
        }
        for (i, r) in h.device_cgroup_rules.iter().enumerate() {
            f.add("devices", format!("{at}DeviceCgroupRules[{i}] is {r:?}"));
        }
    }

    fn bind_source(&self, source: &str, field: &str, f: &mut Findings) {
        let allowed = clean_path(source).is_some_and(|p| {
            self.config
                .allowed_bind_paths
                .iter()
                .filter_map(|a| clean_path(a))
                .any(|a| a == "/" || p == a || p.starts_with(&format!("{a}/")))
        });
        if !allowed {
            f.add(
                "bind-mounts",
                format!(
                    "{field}: host path {source:?} is outside the allowed paths {:?}",
                    self.config.allowed_bind_paths
                ),
            );
        }
    }

    fn mounts(&self, mounts: &[Mount], at: &str, f: &mut Findings) {
        for (i, m) in mounts.iter().enumerate() {
            let field = format!("{at}[{i}]");
            match m.type_.as_str() {
                "bind" => self.bind_source(&m.source, &format!("{field}.Source"), f),
                "volume" => {
                    let dc = &m.volume_options.driver_config;
                    self.volume_options(
                        &dc.name,
                        &dc.options,
                        &format!("{field}.VolumeOptions.DriverConfig.Options"),
                        f,
                    );
                }
                _ => {}
            }
        }
    }

    /// Options of the `local` driver that mount something other than a fresh directory.
    fn volume_options(
        &self,
        driver: &str,
        opts: &BTreeMap<String, String>,
        field: &str,
        f: &mut Findings,
    ) {
        if !(driver.is_empty() || driver == "local") {
            // Other drivers are engine plugins, whose installation is `host-admin`'s.
            return;
        }
        if let Some(t) = opts.get("type") {
            if !self.config.allowed_volume_types.contains(t) {
                f.add(
                    "volume-options",
                    format!("{field}.type is {t:?} (mounts a filesystem on the host)"),
                );
            }
        }
        if let Some(device) = opts.get("device") {
            let tmpfs = opts.get("type").is_some_and(|t| t == "tmpfs")
                && self
                    .config
                    .allowed_volume_types
                    .iter()
                    .any(|t| t == "tmpfs");
            if !tmpfs {
                f.add(
                    "volume-options",
                    format!("{field}.device is {device:?} (mounts a host device or path)"),
                );
            }
        }
        if let Some(o) = opts.get("o") {
            if o.split(',').any(|x| matches!(x.trim(), "bind" | "rbind")) {
                f.add(
                    "volume-options",
                    format!("{field}.o is {o:?} (a bind mount of a host path)"),
                );
            }
        }
    }

    fn capabilities(&self, caps: &[String], field: &str, f: &mut Findings) {
        let allowed: Vec<String> = self
            .config
            .allowed_capabilities
            .iter()
            .map(|c| normalize_cap(c))
            .collect();
        for (i, cap) in caps.iter().enumerate() {
            let c = normalize_cap(cap);
            if !allowed.contains(&c) {
                f.add(
                    "capabilities",
                    format!("{field}[{i}] adds {cap:?}, which is not an allowed capability"),
                );
            }
        }
    }

    fn sysctls(&self, sysctls: &BTreeMap<String, String>, field: &str, f: &mut Findings) {
        for (name, value) in sysctls {
            let allowed = self
                .config
                .allowed_sysctls
                .iter()
                .any(|a| match a.strip_suffix('*') {
                    Some(prefix) => name.starts_with(prefix),
                    None => a == name,
                });
            if !allowed {
                f.add(
                    "sysctls",
                    format!("{field}[{name:?}] = {value:?} is not an allowed sysctl"),
                );
            }
        }
    }

    /// A service's `TaskTemplate.ContainerSpec`.
    fn container_spec(&self, c: &ContainerSpec, f: &mut Findings) {
        let at = "TaskTemplate.ContainerSpec.";
        self.mounts(&c.mounts, &format!("{at}Mounts"), f);
        self.capabilities(&c.capability_add, &format!("{at}CapabilityAdd"), f);
        self.sysctls(&c.sysctls, &format!("{at}Sysctls"), f);
        let p = &c.privileges;
        if p.seccomp.mode == "unconfined" {
            f.add(
                "security-options",
                format!("{at}Privileges.Seccomp.Mode is \"unconfined\""),
            );
        }
        if p.app_armor.mode == "disabled" {
            f.add(
                "security-options",
                format!("{at}Privileges.AppArmor.Mode is \"disabled\""),
            );
        }
        if p.selinux_context.disable {
            f.add(
                "security-options",
                format!("{at}Privileges.SELinuxContext.Disable is true"),
            );
        }
    }

    /// Services attached to the `host` network share the host's network namespace. The
    /// network may be named (`host`) or given by id, which is what the docker CLI sends (the
    /// swarm's own `host` network has an id of its own): by id, the gateway has looked it up
    /// among the request's `related` objects, where its name tells.
    fn service_networks(&self, req: &Request, raw: &Value, f: &mut Findings) {
        let lists = [
            (
                "TaskTemplate.Networks",
                raw.pointer("/TaskTemplate/Networks"),
            ),
            ("Networks", raw.get("Networks")),
        ];
        for (field, list) in lists {
            let Some(list) = list.and_then(Value::as_array) else {
                continue;
            };
            for (i, n) in list.iter().enumerate() {
                if n.get("Target").and_then(Value::as_str) == Some("host") {
                    f.add(
                        "host-namespaces",
                        format!("{field}[{i}].Target is \"host\" (the host's network)"),
                    );
                }
            }
        }
        for r in &req.related {
            let name = r.object.as_ref().and_then(|o| o.name.as_deref());
            if r.kind == "network" && name == Some("host") && r.name != "host" {
                f.add(
                    "host-namespaces",
                    format!("{} is {:?}, the host's network", r.field, r.name),
                );
            }
        }
    }
}

/// The paths dockerd masks and makes read-only in every container (moby's OCI defaults).
/// `docker run --security-opt systempaths=unconfined` sends both lists empty.
const MASKED_PATHS: [&str; 10] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];
const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// `HostConfig.MaskedPaths` / `ReadonlyPaths`: `null` or absent is the engine's default; a
/// list replaces the default, so one without the default paths unmasks them.
fn system_paths(h: &HostConfig, f: &mut Findings) {
    for (field, list, defaults) in [
        ("MaskedPaths", &h.masked_paths, &MASKED_PATHS[..]),
        ("ReadonlyPaths", &h.readonly_paths, &READONLY_PATHS[..]),
    ] {
        let Some(list) = list else {
            continue;
        };
        let missing: Vec<&str> = defaults
            .iter()
            .copied()
            .filter(|d| !list.iter().any(|v| v == d))
            .collect();
        if !missing.is_empty() {
            f.add(
                "security-options",
                format!("HostConfig.{field} leaves out {missing:?} (systempaths=unconfined)"),
            );
        }
    }
}

/// Why a security option switches a confinement off, if it does.
fn unconfined(opt: &str) -> Option<&'static str> {
    // dockerd accepts both `key=value` and the legacy `key:value`.
    let (key, value) = opt.split_once('=').or_else(|| opt.split_once(':'))?;
    match (key.trim(), value.trim()) {
        ("seccomp", "unconfined") => Some("no seccomp filter"),
        ("apparmor", "unconfined") => Some("no AppArmor profile"),
        ("label", "disable") => Some("SELinux labeling disabled"),
        ("systempaths", "unconfined") => Some("/proc and /sys unmasked"),
        _ => None,
    }
}

/// `cap_sys_admin`, `CAP_SYS_ADMIN` and `SYS_ADMIN` are the same capability to dockerd.
fn normalize_cap(cap: &str) -> String {
    let up = cap.trim().to_ascii_uppercase();
    up.strip_prefix("CAP_").map(str::to_owned).unwrap_or(up)
}

/// An absolute path cleaned lexically like Go's `path.Clean` (`//`, `.`, `..`, trailing `/`);
/// `None` when it is not absolute.
pub fn clean_path(p: &str) -> Option<String> {
    if !p.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// A JSON object of strings (nulls are empty strings, as Go reads them).
fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

export_plugin!(Baseline);

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(config: Value) -> Baseline {
        Baseline::new(config).unwrap()
    }

    fn create(body: Value) -> Request {
        Request::new("POST", "/containers/create", "container.create").with_json_body(&body)
    }

    #[test]
    fn hooks_are_declared() {
        portcullis_plugin::testing::assert_hooks(&plugin(Value::Null));
    }

    fn solve(user: &str, body: Value) -> Request {
        let mut req = Request::new("POST", "/moby.buildkit.v1.Control/Solve", "build.solve")
            .with_json_body(&body);
        req.caller.user = user.into();
        req
    }

    #[test]
    fn buildkit_entitlements_and_raw_llb_are_for_administrators() {
        let p = plugin(json!({"admin_users": ["root"]}));
        let plain = json!({"Frontend": "dockerfile.v0", "Entitlements": [], "NetworkMode": "", "RawLLB": false});
        assert_eq!(p.on_request(&solve("alice", plain.clone())), Verdict::Allow);
        for (field, value, message) in [
            (
                "Entitlements",
                json!(["network.host"]),
                r#"[build-entitlements] --allow network.host (build steps in the host network) is limited to the "docker-admin" group"#,
            ),
            (
                "Entitlements",
                json!(["security.insecure"]),
                r#"[build-entitlements] --allow security.insecure (privileged build steps) is limited to the "docker-admin" group"#,
            ),
            (
                "Entitlements",
                json!(["device"]),
                r#"[build-entitlements] --allow device (entitlement "device") is limited to the "docker-admin" group"#,
            ),
            (
                "NetworkMode",
                json!("host"),
                r#"[build-entitlements] --network host (build steps in the host network) is limited to the "docker-admin" group"#,
            ),
            (
                "RawLLB",
                json!(true),
                "[raw-llb] a build without a frontend (raw LLB) can name any source, another user's session included; only administrators send one",
            ),
        ] {
            let mut body = plain.clone();
            body[field] = value;
            assert_eq!(p.on_request(&solve("alice", body.clone())), deny(message));
            assert_eq!(p.on_request(&solve("root", body)), Verdict::Allow, "{message}");
        }
        // The closest that passes: the sandbox's own network, no entitlement.
        let mut none = plain.clone();
        none["NetworkMode"] = json!("none");
        assert_eq!(p.on_request(&solve("alice", none)), Verdict::Allow);
        // An operator may let raw LLB through.
        let open = plugin(json!({"disabled_rules": ["raw-llb"]}));
        let mut raw = plain;
        raw["RawLLB"] = json!(true);
        assert_eq!(open.on_request(&solve("alice", raw)), Verdict::Allow);
    }

    #[test]
    fn docker_py_defaults_pass() {
        let p = plugin(Value::Null);
        let req = create(json!({
            "Image": "busybox", "HostConfig": {"NetworkMode": "default", "CapAdd": null,
            "Privileged": false, "Binds": null, "Mounts": null, "Devices": null,
            "SecurityOpt": null, "Sysctls": null, "Runtime": null, "PidMode": "", "IpcMode": "private"}
        }));
        assert_eq!(p.on_request(&req), Verdict::Allow);
    }

    #[test]
    fn every_violation_is_listed_with_rule_and_field() {
        let p = plugin(Value::Null);
        let req = create(json!({"HostConfig": {
            "Privileged": true, "PidMode": "host", "NetworkMode": "container:abc",
            "Binds": ["/:/host", "vol:/data"], "CapAdd": ["sys_admin", "CHOWN"],
            "SecurityOpt": ["label:disable", "no-new-privileges"],
            "Sysctls": {"kernel.shm_rmid_forced": "1"}, "Runtime": "runsc",
            "VolumesFrom": ["x"], "DeviceCgroupRules": ["a *:* rwm"],
            "Mounts": [{"Type": "bind", "Source": "/tmp/../etc"}]
        }}));
        // In the order of the checks; `vol:/data`, `CHOWN` and `no-new-privileges` pass.
        let expected = [
            "[privileged] HostConfig.Privileged is true",
            r#"[host-namespaces] HostConfig.NetworkMode is "container:abc" (joins another container's namespace)"#,
            r#"[host-namespaces] HostConfig.PidMode is "host" (the host's namespace)"#,
            r#"[bind-mounts] HostConfig.Binds[0]: host path "/" is outside the allowed paths []"#,
            r#"[bind-mounts] HostConfig.Mounts[0].Source: host path "/tmp/../etc" is outside the allowed paths []"#,
            r#"[volumes-from] HostConfig.VolumesFrom is ["x"] (mounts another container's volumes and binds)"#,
            r#"[capabilities] HostConfig.CapAdd[0] adds "sys_admin", which is not an allowed capability"#,
            r#"[devices] HostConfig.DeviceCgroupRules[0] is "a *:* rwm""#,
            r#"[security-options] HostConfig.SecurityOpt[0] is "label:disable" (SELinux labeling disabled)"#,
            r#"[sysctls] HostConfig.Sysctls["kernel.shm_rmid_forced"] = "1" is not an allowed sysctl"#,
            r#"[runtime] HostConfig.Runtime "runsc" is not one of the allowed runtimes ["runc"]"#,
        ];
        assert_eq!(p.on_request(&req), deny(&expected.join("; ")));
    }

    #[test]
    fn allow_lists_and_disabled_rules() {
        let p = plugin(json!({
            "allowed_bind_paths": ["/srv/data/"], "allowed_capabilities": ["NET_ADMIN"],
            "allowed_sysctls": ["net.*"], "disabled_rules": ["privileged"]
        }));
        let ok = create(json!({"HostConfig": {
            "Binds": ["/srv/data:/d", "/srv/data/x/./y:/y:ro"], "CapAdd": ["CAP_NET_ADMIN"],
            "Sysctls": {"net.ipv4.ip_forward": "1"}, "Privileged": true,
            "Mounts": [{"Type": "bind", "Source": "//srv//data/z"}]
        }}));
        assert_eq!(p.on_request(&ok), Verdict::Allow);
        for source in ["/srv/data/../etc", "/srv/database", "/srv"] {
            let req = create(json!({"HostConfig": {"Binds": [format!("{source}:/x")]}}));
            assert_eq!(
                p.on_request(&req),
                deny(&format!(
                    r#"[bind-mounts] HostConfig.Binds[0]: host path "{source}" is outside the allowed paths ["/srv/data/"]"#
                )),
                "{source}"
            );
        }
        assert_eq!(
            Baseline::new(json!({"typo": 1})).err().as_deref(),
            Some("baseline config: unknown field `typo`, expected one of `disabled_rules`, `allowed_bind_paths`, `allowed_capabilities`, `allowed_sysctls`, `allowed_runtimes`, `allowed_volume_types`, `allow_container_joins`, `admin_endpoints`, `admin_group`, `admin_users`, `read_only_users`, `read_only_groups`")
        );
    }

    #[test]
    fn volumes_exec_update_services_admin() {
        let p = plugin(Value::Null);
        let vol = |opts: Value| {
            Request::new("POST", "/volumes/create", "volume.create")
                .with_json_body(&json!({"Name": "v", "Driver": "local", "DriverOpts": opts}))
        };
        assert_eq!(
            p.on_request(&vol(json!({"type": "none", "o": "bind", "device": "/etc"}))),
            deny(concat!(
                r#"[volume-options] DriverOpts.type is "none" (mounts a filesystem on the host); "#,
                r#"[volume-options] DriverOpts.device is "/etc" (mounts a host device or path); "#,
                r#"[volume-options] DriverOpts.o is "bind" (a bind mount of a host path)"#
            ))
        );
        assert_eq!(p.on_request(&vol(json!({}))), Verdict::Allow);
        assert_eq!(p.on_request(&vol(Value::Null)), Verdict::Allow);

        let exec = Request::new("POST", "/containers/x/exec", "container.exec")
            .with_json_body(&json!({"Cmd": ["sh"], "Privileged": true}));
        assert_eq!(
            p.on_request(&exec),
            deny("[privileged] Privileged is true (privileged exec)")
        );

        let update = Request::new("POST", "/containers/x/update", "container.update")
            .with_json_body(&json!({"Devices": [{"PathOnHost": "/dev/sda"}], "Memory": 0}));
        assert_eq!(
            p.on_request(&update),
            deny(r#"[devices] Devices[0] maps host device "/dev/sda""#)
        );

        let svc =
            Request::new("POST", "/services/create", "service.create").with_json_body(&json!({
                "TaskTemplate": {"ContainerSpec": {"Image": "x",
                    "Mounts": [{"Type": "bind", "Source": "/var/run/docker.sock", "Target": "/s"}],
                    "CapabilityAdd": ["ALL"], "Privileges": {"Seccomp": {"Mode": "unconfined"}}},
                    "Networks": [{"Target": "host"}]}
            }));
        let expected = [
            r#"[bind-mounts] TaskTemplate.ContainerSpec.Mounts[0].Source: host path "/var/run/docker.sock" is outside the allowed paths []"#,
            r#"[capabilities] TaskTemplate.ContainerSpec.CapabilityAdd[0] adds "ALL", which is not an allowed capability"#,
            r#"[security-options] TaskTemplate.ContainerSpec.Privileges.Seccomp.Mode is "unconfined""#,
            r#"[host-namespaces] TaskTemplate.Networks[0].Target is "host" (the host's network)"#,
        ];
        assert_eq!(p.on_request(&svc), deny(&expected.join("; ")));

        let mut admin = Request::new("POST", "/plugins/pull", "plugin.pull");
        assert_eq!(
            p.on_request(&admin),
            deny(
                r#"[host-admin] plugin.pull administers the host and is limited to the "docker-admin" group"#
            )
        );
        admin.caller.groups = vec!["docker-admin".into()];
        assert_eq!(p.on_request(&admin), Verdict::Allow);
    }

    /// The docker CLI sends `--network host` as the id of the swarm's `host` network; the
    /// gateway's lookup of it names it.
    #[test]
    fn services_on_the_host_network_by_id() {
        let p = plugin(Value::Null);
        let network = |id: &str, name: &str| Reference {
            field: "TaskTemplate.Networks[0].Target".into(),
            kind: "network".into(),
            name: id.into(),
            object: Some(Target {
                kind: "network".into(),
                id: id.into(),
                name: Some(name.into()),
                ..Target::default()
            }),
        };
        let mut svc =
            Request::new("POST", "/services/create", "service.create").with_json_body(&json!({
                "TaskTemplate": {"ContainerSpec": {"Image": "x"},
                    "Networks": [{"Target": "b00w2d5edb3e"}]}
            }));
        svc.related = vec![network("b00w2d5edb3e", "host")];
        assert_eq!(
            p.on_request(&svc),
            deny(
                r#"[host-namespaces] TaskTemplate.Networks[0].Target is "b00w2d5edb3e", the host's network"#
            )
        );
        svc.related = vec![network("b00w2d5edb3e", "back")];
        assert_eq!(p.on_request(&svc), Verdict::Allow);
    }

    #[test]
    fn swarm_join_tokens_are_for_administrators() {
        let p = plugin(Value::Null);
        let mut inspect = Request::new("GET", "/swarm", "swarm.inspect");
        assert_eq!(
            p.on_request(&inspect),
            deny(
                r#"[host-admin] swarm.inspect administers the host and is limited to the "docker-admin" group"#
            )
        );
        inspect.caller.groups = vec!["docker-admin".into()];
        assert_eq!(p.on_request(&inspect), Verdict::Allow);
        // Nodes are read by everyone (`docker service ps` names each task's node).
        let nodes = Request::new("GET", "/nodes", "node.list");
        assert_eq!(p.on_request(&nodes), Verdict::Allow);
        let update = Request::new("POST", "/nodes/n/update", "node.update");
        assert_eq!(
            p.on_request(&update),
            deny(
                r#"[host-admin] node.update administers the host and is limited to the "docker-admin" group"#
            )
        );
    }

    #[test]
    fn read_only_callers() {
        let p = plugin(json!({"read_only_groups": ["auditors"]}));
        let mut req = Request::new("POST", "/containers/x/stop", "container.stop");
        req.caller.user = "carol".into();
        req.caller.groups = vec!["auditors".into()];
        assert_eq!(
            p.on_request(&req),
            deny("[read-only] carol may only read; POST container.stop changes state")
        );
        req.method = "GET".into();
        req.endpoint = "container.inspect".into();
        assert_eq!(p.on_request(&req), Verdict::Allow);
    }

    #[test]
    fn paths_clean_like_go() {
        assert_eq!(clean_path("/a//b/./c/../d/").as_deref(), Some("/a/b/d"));
        assert_eq!(clean_path("/../..").as_deref(), Some("/"));
        assert_eq!(clean_path("a/b"), None);
    }

    fn request(method: &str, endpoint: &str, body: Value) -> Request {
        Request::new(method, "/x", endpoint).with_json_body(&body)
    }

    fn service(container_spec: Value) -> Request {
        request(
            "POST",
            "service.create",
            json!({"TaskTemplate": {"ContainerSpec": container_spec}}),
        )
    }

    fn build(networkmode: &str) -> Request {
        let mut req = Request::new("POST", "/build", "image.build");
        req.query = vec![portcullis_plugin::Pair::new("networkmode", networkmode)];
        req
    }

    fn deny(message: &str) -> Verdict {
        Verdict::deny(message)
    }

    /// Every rule with the request that triggers it (and the exact denial), and the closest
    /// request that must pass; disabling the rule lets the trigger through.
    #[test]
    fn each_rule_triggers_and_its_closest_request_passes() {
        let p = plugin(json!({"read_only_users": ["auditor"]}));
        let as_user = |mut req: Request, user: &str| {
            req.caller.user = user.into();
            req
        };
        let cases: Vec<(&str, Request, &str, Request)> = vec![
            (
                "privileged",
                create(json!({"HostConfig": {"Privileged": true}})),
                "[privileged] HostConfig.Privileged is true",
                create(json!({"HostConfig": {"Privileged": false}})),
            ),
            (
                "host-namespaces",
                create(json!({"HostConfig": {"PidMode": "host"}})),
                r#"[host-namespaces] HostConfig.PidMode is "host" (the host's namespace)"#,
                create(json!({"HostConfig": {"PidMode": "private"}})),
            ),
            (
                "bind-mounts",
                create(json!({"HostConfig": {"Binds": ["/:/host"]}})),
                r#"[bind-mounts] HostConfig.Binds[0]: host path "/" is outside the allowed paths []"#,
                create(json!({"HostConfig": {"Binds": ["root:/host"]}})),
            ),
            (
                "volume-options",
                request("POST", "volume.create", json!({"DriverOpts": {"o": "bind"}})),
                r#"[volume-options] DriverOpts.o is "bind" (a bind mount of a host path)"#,
                request("POST", "volume.create", json!({"DriverOpts": {"o": "size=1g"}})),
            ),
            (
                "volumes-from",
                create(json!({"HostConfig": {"VolumesFrom": ["web:ro"]}})),
                r#"[volumes-from] HostConfig.VolumesFrom is ["web:ro"] (mounts another container's volumes and binds)"#,
                create(json!({"HostConfig": {"VolumesFrom": []}})),
            ),
            (
                "capabilities",
                create(json!({"HostConfig": {"CapAdd": ["SYS_ADMIN"]}})),
                r#"[capabilities] HostConfig.CapAdd[0] adds "SYS_ADMIN", which is not an allowed capability"#,
                create(json!({"HostConfig": {"CapAdd": ["cap_chown"]}})),
            ),
            (
                "devices",
                create(json!({"HostConfig": {"Devices": [{"PathOnHost": "/dev/sda"}]}})),
                r#"[devices] HostConfig.Devices[0] maps host device "/dev/sda""#,
                create(json!({"HostConfig": {"Devices": []}})),
            ),
            (
                "security-options",
                create(json!({"HostConfig": {"SecurityOpt": ["seccomp=unconfined"]}})),
                r#"[security-options] HostConfig.SecurityOpt[0] is "seccomp=unconfined" (no seccomp filter)"#,
                create(json!({"HostConfig": {"SecurityOpt": ["seccomp=profile.json"]}})),
            ),
            (
                "sysctls",
                create(json!({"HostConfig": {"Sysctls": {"kernel.msgmax": "1"}}})),
                r#"[sysctls] HostConfig.Sysctls["kernel.msgmax"] = "1" is not an allowed sysctl"#,
                create(json!({"HostConfig": {"Sysctls": {}}})),
            ),
            (
                "runtime",
                create(json!({"HostConfig": {"Runtime": "runsc"}})),
                r#"[runtime] HostConfig.Runtime "runsc" is not one of the allowed runtimes ["runc"]"#,
                create(json!({"HostConfig": {"Runtime": "runc"}})),
            ),
            (
                "host-admin",
                Request::new("POST", "/swarm/init", "swarm.init"),
                r#"[host-admin] swarm.init administers the host and is limited to the "docker-admin" group"#,
                Request::new("GET", "/nodes", "node.list"),
            ),
            (
                "read-only",
                as_user(Request::new("POST", "/containers/x/stop", "container.stop"), "auditor"),
                "[read-only] auditor may only read; POST container.stop changes state",
                as_user(Request::new("GET", "/containers/x/json", "container.inspect"), "auditor"),
            ),
            (
                "build-entitlements",
                solve("alice", json!({"Frontend": "dockerfile.v0", "NetworkMode": "host"})),
                r#"[build-entitlements] --network host (build steps in the host network) is limited to the "docker-admin" group"#,
                solve("alice", json!({"Frontend": "dockerfile.v0", "NetworkMode": "none"})),
            ),
            (
                "raw-llb",
                solve("alice", json!({"RawLLB": true})),
                "[raw-llb] a build without a frontend (raw LLB) can name any source, another user's session included; only administrators send one",
                solve("alice", json!({"RawLLB": false})),
            ),
        ];
        assert_eq!(
            cases.iter().map(|c| c.0).collect::<Vec<_>>(),
            RULES,
            "one case per rule"
        );
        for (rule, trigger, message, closest) in cases {
            assert_eq!(p.on_request(&trigger), deny(message), "{rule}");
            assert_eq!(p.on_request(&closest), Verdict::Allow, "{rule}");
            let off = plugin(json!({"read_only_users": ["auditor"], "disabled_rules": [rule]}));
            assert_eq!(off.on_request(&trigger), Verdict::Allow, "{rule} disabled");
        }
    }

    #[test]
    fn privileged_exec() {
        let p = plugin(Value::Null);
        let exec = |privileged: bool| {
            request(
                "POST",
                "container.exec",
                json!({"Cmd": ["sh"], "Privileged": privileged}),
            )
        };
        assert_eq!(
            p.on_request(&exec(true)),
            deny("[privileged] Privileged is true (privileged exec)")
        );
        assert_eq!(p.on_request(&exec(false)), Verdict::Allow);
    }

    #[test]
    fn host_namespaces_every_mode() {
        let p = plugin(Value::Null);
        let joins = plugin(json!({"allow_container_joins": true}));
        for (field, joinable) in [
            ("NetworkMode", true),
            ("PidMode", true),
            ("IpcMode", true),
            ("UTSMode", false),
            ("UsernsMode", false),
            ("CgroupnsMode", false),
        ] {
            let mode = |value: &str| create(json!({"HostConfig": {field: value}}));
            let host = deny(&format!(
                "[host-namespaces] HostConfig.{field} is \"host\" (the host's namespace)"
            ));
            assert_eq!(p.on_request(&mode("host")), host, "{field}");
            assert_eq!(joins.on_request(&mode("host")), host, "{field}");
            assert_eq!(p.on_request(&mode("private")), Verdict::Allow, "{field}");
            assert_eq!(p.on_request(&mode("hostile")), Verdict::Allow, "{field}");
            let join = mode("container:web");
            if joinable {
                assert_eq!(
                    p.on_request(&join),
                    deny(&format!(
                        "[host-namespaces] HostConfig.{field} is \"container:web\" (joins another container's namespace)"
                    )),
                    "{field}"
                );
            } else {
                assert_eq!(p.on_request(&join), Verdict::Allow, "{field}");
            }
            assert_eq!(joins.on_request(&join), Verdict::Allow, "{field}");
        }
        // A build's steps in the host network.
        assert_eq!(
            p.on_request(&build("host")),
            deny(r#"[host-namespaces] networkmode is "host" (build steps in the host network)"#)
        );
        assert_eq!(p.on_request(&build("bridge")), Verdict::Allow);
        let mut other = build("host");
        other.endpoint = "image.load".into();
        assert_eq!(p.on_request(&other), Verdict::Allow);
    }

    #[test]
    fn host_namespaces_of_services() {
        let p = plugin(Value::Null);
        let networks = |template: Value, top: Value| {
            request(
                "POST",
                "service.update",
                json!({"TaskTemplate": template, "Networks": top}),
            )
        };
        assert_eq!(
            p.on_request(&networks(
                json!({"Networks": [{"Target": "back"}, {"Target": "host"}]}),
                json!([{"Target": "host"}])
            )),
            deny(
                r#"[host-namespaces] TaskTemplate.Networks[1].Target is "host" (the host's network); [host-namespaces] Networks[0].Target is "host" (the host's network)"#
            )
        );
        assert_eq!(
            p.on_request(&networks(
                json!({"Networks": [{"Target": "hostnet"}]}),
                json!([{"Target": "back"}])
            )),
            Verdict::Allow
        );
        assert_eq!(
            p.on_request(&networks(json!({"Networks": null}), Value::Null)),
            Verdict::Allow
        );
        // By id: the gateway's lookup names the network. Named `host` in the body, it is
        // refused once, by the body's own rule; an object of another kind named `host` is not
        // a network.
        let related = |kind: &str, name: &str, found: &str| Reference {
            field: "TaskTemplate.Networks[0].Target".into(),
            kind: kind.into(),
            name: name.into(),
            object: Some(Target {
                kind: kind.into(),
                name: Some(found.into()),
                ..Target::default()
            }),
        };
        let mut by_name = networks(json!({"Networks": [{"Target": "host"}]}), Value::Null);
        by_name.related = vec![related("network", "host", "host")];
        assert_eq!(
            p.on_request(&by_name),
            deny(
                r#"[host-namespaces] TaskTemplate.Networks[0].Target is "host" (the host's network)"#
            )
        );
        let mut by_id = networks(json!({"Networks": [{"Target": "n1"}]}), Value::Null);
        by_id.related = vec![related("volume", "n1", "host")];
        assert_eq!(p.on_request(&by_id), Verdict::Allow);
        by_id.related = vec![Reference {
            object: None,
            ..related("network", "n1", "host")
        }];
        assert_eq!(p.on_request(&by_id), Verdict::Allow);
        by_id.related = vec![related("network", "n1", "host")];
        assert_eq!(
            p.on_request(&by_id),
            deny(
                r#"[host-namespaces] TaskTemplate.Networks[0].Target is "n1", the host's network"#
            )
        );
    }

    #[test]
    fn bind_mounts_against_the_allow_list() {
        let p = plugin(json!({"allowed_bind_paths": ["/srv/data"]}));
        let binds = |bind: &str| create(json!({"HostConfig": {"Binds": [bind]}}));
        for allowed in [
            "/srv/data:/d",
            "/srv/data/x/../y:/d:ro",
            "data:/d",
            "/anonymous",
        ] {
            assert_eq!(p.on_request(&binds(allowed)), Verdict::Allow, "{allowed}");
        }
        for source in ["/srv/database", "/srv", "/srv/data/../etc"] {
            assert_eq!(
                p.on_request(&binds(&format!("{source}:/d"))),
                deny(&format!(
                    r#"[bind-mounts] HostConfig.Binds[0]: host path "{source}" is outside the allowed paths ["/srv/data"]"#
                )),
                "{source}"
            );
        }
        // `/` allows everything.
        let all = plugin(json!({"allowed_bind_paths": ["/"]}));
        assert_eq!(all.on_request(&binds("/etc:/etc")), Verdict::Allow);
        // Mounts of type bind, in containers and services; a source that is not absolute is
        // not within any allowed path.
        let mounts = |source: &str, type_: &str| {
            create(
                json!({"HostConfig": {"Mounts": [{"Type": "volume"}, {"Type": type_, "Source": source}]}}),
            )
        };
        assert_eq!(
            p.on_request(&mounts("/etc", "bind")),
            deny(
                r#"[bind-mounts] HostConfig.Mounts[1].Source: host path "/etc" is outside the allowed paths ["/srv/data"]"#
            )
        );
        assert_eq!(
            p.on_request(&mounts("srv/data", "bind")),
            deny(
                r#"[bind-mounts] HostConfig.Mounts[1].Source: host path "srv/data" is outside the allowed paths ["/srv/data"]"#
            )
        );
        assert_eq!(p.on_request(&mounts("/srv/data/x", "bind")), Verdict::Allow);
        assert_eq!(p.on_request(&mounts("/etc", "tmpfs")), Verdict::Allow);
        assert_eq!(
            p.on_request(&service(
                json!({"Mounts": [{"Type": "bind", "Source": "/etc"}]})
            )),
            deny(
                r#"[bind-mounts] TaskTemplate.ContainerSpec.Mounts[0].Source: host path "/etc" is outside the allowed paths ["/srv/data"]"#
            )
        );
    }

    #[test]
    fn volume_options_of_local_volumes() {
        let p = plugin(Value::Null);
        let vol = |driver: &str, opts: Value| {
            request(
                "POST",
                "volume.create",
                json!({"Driver": driver, "DriverOpts": opts}),
            )
        };
        assert_eq!(
            p.on_request(&vol(
                "local",
                json!({"type": "nfs", "device": ":/x", "o": "addr=h,rbind"})
            )),
            deny(
                r#"[volume-options] DriverOpts.type is "nfs" (mounts a filesystem on the host); [volume-options] DriverOpts.device is ":/x" (mounts a host device or path); [volume-options] DriverOpts.o is "addr=h,rbind" (a bind mount of a host path)"#
            )
        );
        assert_eq!(
            p.on_request(&vol("", json!({"o": "size=1m, bind "}))),
            deny(
                r#"[volume-options] DriverOpts.o is "size=1m, bind " (a bind mount of a host path)"#
            )
        );
        // Other drivers are engine plugins: their installation is host-admin's.
        assert_eq!(
            p.on_request(&vol(
                "rexray",
                json!({"type": "nfs", "device": "/", "o": "bind"})
            )),
            Verdict::Allow
        );
        assert_eq!(
            p.on_request(&vol("local", json!({"o": "binding"}))),
            Verdict::Allow
        );
        // Allowed types; the device of a tmpfs is no host device.
        let tmpfs = plugin(json!({"allowed_volume_types": ["tmpfs", "nfs"]}));
        assert_eq!(
            tmpfs.on_request(&vol("local", json!({"type": "tmpfs", "device": "tmpfs"}))),
            Verdict::Allow
        );
        assert_eq!(
            tmpfs.on_request(&vol("local", json!({"type": "nfs", "device": ":/x"}))),
            deny(r#"[volume-options] DriverOpts.device is ":/x" (mounts a host device or path)"#)
        );
        assert_eq!(
            p.on_request(&vol("local", json!({"type": "tmpfs", "device": "tmpfs"}))),
            deny(
                r#"[volume-options] DriverOpts.type is "tmpfs" (mounts a filesystem on the host); [volume-options] DriverOpts.device is "tmpfs" (mounts a host device or path)"#
            )
        );
        let nfs = plugin(json!({"allowed_volume_types": ["nfs"]}));
        assert_eq!(
            nfs.on_request(&vol("local", json!({"type": "tmpfs", "device": "tmpfs"}))),
            deny(
                r#"[volume-options] DriverOpts.type is "tmpfs" (mounts a filesystem on the host); [volume-options] DriverOpts.device is "tmpfs" (mounts a host device or path)"#
            )
        );
        // The same options in a container's volume mount.
        let mount = create(json!({"HostConfig": {"Mounts": [{"Type": "volume",
            "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": {"device": "/etc"}}}}]}}));
        assert_eq!(
            p.on_request(&mount),
            deny(
                r#"[volume-options] HostConfig.Mounts[0].VolumeOptions.DriverConfig.Options.device is "/etc" (mounts a host device or path)"#
            )
        );
    }

    #[test]
    fn capabilities_against_the_allow_list() {
        let p = plugin(Value::Null);
        let caps = |caps: Value| create(json!({"HostConfig": {"CapAdd": caps}}));
        assert_eq!(
            p.on_request(&caps(json!(["CHOWN", " cap_kill ", "ALL"]))),
            deny(
                r#"[capabilities] HostConfig.CapAdd[2] adds "ALL", which is not an allowed capability"#
            )
        );
        // A configured list replaces Docker's default set; either spelling matches.
        let p = plugin(json!({"allowed_capabilities": ["cap_net_admin"]}));
        assert_eq!(p.on_request(&caps(json!(["NET_ADMIN"]))), Verdict::Allow);
        assert_eq!(
            p.on_request(&caps(json!(["NET_ADMIN", "CHOWN"]))),
            deny(
                r#"[capabilities] HostConfig.CapAdd[1] adds "CHOWN", which is not an allowed capability"#
            )
        );
        assert_eq!(
            p.on_request(&service(json!({"CapabilityAdd": ["CAP_SYS_ADMIN"]}))),
            deny(
                r#"[capabilities] TaskTemplate.ContainerSpec.CapabilityAdd[0] adds "CAP_SYS_ADMIN", which is not an allowed capability"#
            )
        );
    }

    #[test]
    fn devices_in_create_and_update() {
        let p = plugin(Value::Null);
        assert_eq!(
            p.on_request(&create(json!({"HostConfig": {
                "DeviceRequests": [{"Driver": "nvidia", "Count": -1}],
                "DeviceCgroupRules": ["c 1:3 mr"]}}))),
            deny(
                r#"[devices] HostConfig.DeviceRequests[0] requests devices (driver "nvidia"); [devices] HostConfig.DeviceCgroupRules[0] is "c 1:3 mr""#
            )
        );
        let update = |body: Value| request("POST", "container.update", body);
        assert_eq!(
            p.on_request(&update(json!({"Devices": [{"PathOnHost": "/dev/kmsg"}]}))),
            deny(r#"[devices] Devices[0] maps host device "/dev/kmsg""#)
        );
        assert_eq!(
            p.on_request(&update(json!({"Memory": 1024}))),
            Verdict::Allow
        );
        // Only the device fields of an update are judged.
        assert_eq!(
            p.on_request(&update(json!({"Privileged": true, "Binds": ["/:/h"]}))),
            Verdict::Allow
        );
    }

    #[test]
    fn security_options_and_system_paths() {
        let p = plugin(Value::Null);
        let opts =
            |opt: &str| create(json!({"HostConfig": {"SecurityOpt": ["no-new-privileges", opt]}}));
        for (opt, why) in [
            ("seccomp=unconfined", "no seccomp filter"),
            ("apparmor=unconfined", "no AppArmor profile"),
            ("label=disable", "SELinux labeling disabled"),
            ("label:disable", "SELinux labeling disabled"),
            ("systempaths=unconfined", "/proc and /sys unmasked"),
            (" seccomp = unconfined ", "no seccomp filter"),
        ] {
            assert_eq!(
                p.on_request(&opts(opt)),
                deny(&format!(
                    "[security-options] HostConfig.SecurityOpt[1] is {opt:?} ({why})"
                )),
                "{opt}"
            );
        }
        for opt in [
            "seccomp=default.json",
            "apparmor=docker-default",
            "label=type:svirt_lxc_net_t",
            "systempaths=default",
            "unconfined",
        ] {
            assert_eq!(p.on_request(&opts(opt)), Verdict::Allow, "{opt}");
        }
        // The masked and read-only paths: a list replaces the defaults.
        let paths = |masked: Value, readonly: Value| {
            create(json!({"HostConfig": {"MaskedPaths": masked, "ReadonlyPaths": readonly}}))
        };
        let mut masked: Vec<&str> = MASKED_PATHS.to_vec();
        masked.push("/proc/extra");
        assert_eq!(
            p.on_request(&paths(json!(masked), json!(READONLY_PATHS))),
            Verdict::Allow
        );
        assert_eq!(
            p.on_request(&paths(Value::Null, Value::Null)),
            Verdict::Allow
        );
        assert_eq!(
            p.on_request(&paths(json!([]), json!(&READONLY_PATHS[1..]))),
            deny(&format!(
                "[security-options] HostConfig.MaskedPaths leaves out {:?} (systempaths=unconfined); [security-options] HostConfig.ReadonlyPaths leaves out [\"/proc/bus\"] (systempaths=unconfined)",
                MASKED_PATHS
            ))
        );
        // A service's privileges.
        let privileges = |privileges: Value| service(json!({"Privileges": privileges}));
        assert_eq!(
            p.on_request(&privileges(json!({"Seccomp": {"Mode": "unconfined"},
                "AppArmor": {"Mode": "disabled"}, "SELinuxContext": {"Disable": true}}))),
            deny("[security-options] TaskTemplate.ContainerSpec.Privileges.Seccomp.Mode is \"unconfined\"; [security-options] TaskTemplate.ContainerSpec.Privileges.AppArmor.Mode is \"disabled\"; [security-options] TaskTemplate.ContainerSpec.Privileges.SELinuxContext.Disable is true")
        );
        assert_eq!(
            p.on_request(&privileges(json!({"Seccomp": {"Mode": "default"},
                "AppArmor": {"Mode": "default"}, "SELinuxContext": {"Disable": false}}))),
            Verdict::Allow
        );
    }

    #[test]
    fn sysctls_against_the_allow_list() {
        let p = plugin(json!({"allowed_sysctls": ["net.*", "kernel.msgmax"]}));
        let sysctls = |s: Value| create(json!({"HostConfig": {"Sysctls": s}}));
        assert_eq!(
            p.on_request(&sysctls(
                json!({"net.ipv4.ip_forward": "1", "kernel.msgmax": "9"})
            )),
            Verdict::Allow
        );
        assert_eq!(
            p.on_request(&sysctls(json!({"netfilter.x": "1", "kernel.msgmaxx": "2"}))),
            deny(
                r#"[sysctls] HostConfig.Sysctls["kernel.msgmaxx"] = "2" is not an allowed sysctl; [sysctls] HostConfig.Sysctls["netfilter.x"] = "1" is not an allowed sysctl"#
            )
        );
        assert_eq!(
            p.on_request(&service(json!({"Sysctls": {"kernel.shmmax": "1"}}))),
            deny(
                r#"[sysctls] TaskTemplate.ContainerSpec.Sysctls["kernel.shmmax"] = "1" is not an allowed sysctl"#
            )
        );
    }

    #[test]
    fn runtimes() {
        let p = plugin(Value::Null);
        assert_eq!(
            p.on_request(&create(json!({"HostConfig": {"Runtime": ""}}))),
            Verdict::Allow
        );
        let svc = |runtime: &str| {
            request(
                "POST",
                "service.create",
                json!({"TaskTemplate": {"Runtime": runtime}}),
            )
        };
        assert_eq!(
            p.on_request(&svc("plugin")),
            deny(r#"[runtime] TaskTemplate.Runtime is "plugin" (installs an engine plugin)"#)
        );
        assert_eq!(p.on_request(&svc("container")), Verdict::Allow);
        let gvisor = plugin(json!({"allowed_runtimes": ["runsc"]}));
        assert_eq!(
            gvisor.on_request(&create(json!({"HostConfig": {"Runtime": "runsc"}}))),
            Verdict::Allow
        );
        assert_eq!(
            gvisor.on_request(&create(json!({"HostConfig": {"Runtime": "runc"}}))),
            deny(
                r#"[runtime] HostConfig.Runtime "runc" is not one of the allowed runtimes ["runsc"]"#
            )
        );
    }

    #[test]
    fn host_admin_endpoints_and_administrators() {
        let p = plugin(json!({"admin_users": ["root"]}));
        for endpoint in ADMIN_ENDPOINTS {
            let req = Request::new("POST", "/x", endpoint);
            assert_eq!(
                p.on_request(&req),
                deny(&format!(
                    "[host-admin] {endpoint} administers the host and is limited to the \"docker-admin\" group"
                ))
            );
            let mut admin = req.clone();
            admin.caller.user = "root".into();
            assert_eq!(p.on_request(&admin), Verdict::Allow, "{endpoint}");
            let mut member = req;
            member.caller.groups = vec!["dev".into(), "docker-admin".into()];
            assert_eq!(p.on_request(&member), Verdict::Allow, "{endpoint}");
        }
        for endpoint in [
            "plugin.list",
            "node.inspect",
            "swarm.unlockkeys",
            "build.pruned",
        ] {
            assert_eq!(
                p.on_request(&Request::new("GET", "/x", endpoint)),
                Verdict::Allow,
                "{endpoint}"
            );
        }
        // Configured endpoints, by name or prefix; an empty group has no members.
        let p = plugin(json!({"admin_endpoints": ["plugin.*", "image.push"], "admin_group": ""}));
        let mut req = Request::new("GET", "/plugins", "plugin.list");
        req.caller.groups = vec!["".into()];
        assert_eq!(
            p.on_request(&req),
            deny(r#"[host-admin] plugin.list administers the host and is limited to the "" group"#)
        );
        for endpoint in ["plugins.list", "image.pushed", "swarm.init"] {
            req.endpoint = endpoint.into();
            assert_eq!(p.on_request(&req), Verdict::Allow, "{endpoint}");
        }
    }

    #[test]
    fn read_only_users_and_groups() {
        let p = plugin(json!({"read_only_users": ["auditor"], "read_only_groups": ["audit"]}));
        let call = |method: &str, user: &str, groups: &[&str]| {
            let mut req = Request::new(method, "/x", "container.kill");
            req.caller.user = user.into();
            req.caller.groups = groups.iter().map(|g| g.to_string()).collect();
            p.on_request(&req)
        };
        assert_eq!(
            call("DELETE", "bob", &["dev", "audit"]),
            deny("[read-only] bob may only read; DELETE container.kill changes state")
        );
        assert_eq!(
            call("POST", "auditor", &[]),
            deny("[read-only] auditor may only read; POST container.kill changes state")
        );
        assert_eq!(call("GET", "auditor", &["audit"]), Verdict::Allow);
        assert_eq!(call("HEAD", "auditor", &["audit"]), Verdict::Allow);
        assert_eq!(call("POST", "bob", &["auditors"]), Verdict::Allow);
    }

    #[test]
    fn buildkit_rules_exactly() {
        let p = plugin(json!({"admin_group": "builders"}));
        assert_eq!(
            p.on_request(&solve(
                "alice",
                json!({"Entitlements": ["network.host", "security.insecure", "device=x"]})
            )),
            deny(
                r#"[build-entitlements] --allow network.host (build steps in the host network) is limited to the "builders" group; [build-entitlements] --allow security.insecure (privileged build steps) is limited to the "builders" group; [build-entitlements] --allow device=x (entitlement "device=x") is limited to the "builders" group"#
            )
        );
        let mut member = solve(
            "alice",
            json!({"Entitlements": ["security.insecure"], "RawLLB": true}),
        );
        member.caller.groups = vec!["builders".into()];
        assert_eq!(p.on_request(&member), Verdict::Allow);
        assert_eq!(
            p.on_request(&solve(
                "alice",
                json!({"Entitlements": null, "NetworkMode": "bridge"})
            )),
            Verdict::Allow
        );
    }

    /// A body the engine would refuse is refused: what the engine acts on must be what was
    /// judged. No body at all is judged as empty.
    #[test]
    fn unreadable_bodies() {
        let p = plugin(json!({"disabled_rules": RULES}));
        for (endpoint, what) in [
            ("container.create", "container"),
            ("container.update", "update"),
            ("container.exec", "exec"),
            ("service.create", "service"),
            ("service.update", "service"),
        ] {
            let mut req = Request::new("POST", "/x", endpoint);
            assert_eq!(p.on_request(&req), Verdict::Allow, "{endpoint}");
            req.body = Some("\"text\"".into());
            assert_eq!(
                p.on_request(&req),
                deny(&format!(
                    "[body] the {what} body cannot be read as Docker's {what} config"
                )),
                "{endpoint}"
            );
        }
        let mut req = Request::new("POST", "/x", "build.solve");
        assert_eq!(p.on_request(&req), Verdict::Allow);
        req.body = Some("{".into());
        assert_eq!(
            p.on_request(&req),
            deny("[body] the build.solve body cannot be read as Docker's build.solve config")
        );
        // A volume create without a readable body asks for nothing.
        let mut req = Request::new("POST", "/x", "volume.create");
        req.body = Some("{".into());
        assert_eq!(plugin(Value::Null).on_request(&req), Verdict::Allow);
    }

    #[test]
    fn configuration_errors_are_exact() {
        assert_eq!(
            Baseline::new(json!({"disabled_rules": ["privileged", "nope"]})).err(),
            Some(format!(
                "baseline config: disabled_rules: unknown rule \"nope\" (rules: {})",
                RULES.join(", ")
            ))
        );
        assert_eq!(
            Baseline::new(json!({"allowed_bind_paths": ["/ok", "rel/x"]})).err(),
            Some("baseline config: allowed_bind_paths: \"rel/x\" is not an absolute path".into())
        );
        assert_eq!(
            Baseline::new(json!({"allow_container_joins": "yes"})).err(),
            Some("baseline config: invalid type: string \"yes\", expected a boolean".into())
        );
        // An empty table is the default configuration.
        let p = plugin(json!({}));
        assert_eq!(
            p.on_request(&create(json!({"HostConfig": {"CapAdd": ["KILL"]}}))),
            Verdict::Allow
        );
    }
}
