//! Typed views of the Docker Engine API request bodies policies care about.
//!
//! They read what dockerd's Go decoder reads, so a body the engine accepts is never one a
//! policy fails to see:
//!
//! - every field is optional (a missing one is the zero value);
//! - `null` anywhere is the zero value, as in Go (`"CapAdd": null`, `"Env": [null]`,
//!   `"Labels": {"a": null}`): docker-py and other SDKs send explicit nulls;
//! - a list of strings may be sent as one string (Docker's `StrSlice`, used by `Cmd` and
//!   `Entrypoint`);
//! - unknown fields are ignored, and on a duplicated key the last wins.
//!
//! Field names are matched exactly (`Privileged`, not `privileged`): the gateway hands plugins
//! the canonical body, in which the engine's case-insensitive names are already normalized.
//! Only the fields listed are read; [`Request::json_body`](crate::Request::json_body) has
//! the rest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The body of `POST /containers/create` (endpoint `container.create`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ContainerCreate {
    /// The image reference, e.g. `busybox:latest`.
    #[serde(deserialize_with = "de::nullable")]
    pub image: String,
    /// The command (a string is one element).
    #[serde(deserialize_with = "de::strings")]
    pub cmd: Vec<String>,
    /// The entrypoint (a string is one element).
    #[serde(deserialize_with = "de::strings")]
    pub entrypoint: Vec<String>,
    /// Environment variables, `NAME=value`.
    #[serde(deserialize_with = "de::strings")]
    pub env: Vec<String>,
    /// The user (`name`, `uid`, `uid:gid`); empty means the image's.
    #[serde(deserialize_with = "de::nullable")]
    pub user: String,
    /// The working directory.
    #[serde(deserialize_with = "de::nullable")]
    pub working_dir: String,
    /// The container's labels.
    #[serde(deserialize_with = "de::string_map")]
    pub labels: BTreeMap<String, String>,
    /// What the container may do to its host.
    #[serde(deserialize_with = "de::nullable")]
    pub host_config: HostConfig,
}

/// `HostConfig` of a container: mounts, privileges, namespaces, devices.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct HostConfig {
    /// Full privileges on the host (`--privileged`).
    #[serde(deserialize_with = "de::nullable")]
    pub privileged: bool,
    /// Volume and bind mounts, `source:target[:options]` (`-v`).
    #[serde(deserialize_with = "de::strings")]
    pub binds: Vec<String>,
    /// Mounts (`--mount`).
    #[serde(deserialize_with = "de::list")]
    pub mounts: Vec<Mount>,
    /// Capabilities added (`--cap-add`).
    #[serde(deserialize_with = "de::strings")]
    pub cap_add: Vec<String>,
    /// Capabilities dropped (`--cap-drop`).
    #[serde(deserialize_with = "de::strings")]
    pub cap_drop: Vec<String>,
    /// Host devices (`--device`).
    #[serde(deserialize_with = "de::list")]
    pub devices: Vec<DeviceMapping>,
    /// Device requests, e.g. GPUs (`--gpus`).
    #[serde(deserialize_with = "de::list")]
    pub device_requests: Vec<DeviceRequest>,
    /// Device cgroup rules (`--device-cgroup-rule`).
    #[serde(deserialize_with = "de::strings")]
    pub device_cgroup_rules: Vec<String>,
    /// The network mode: `bridge`, `host`, `none`, `container:<id>`, a network name.
    #[serde(deserialize_with = "de::nullable")]
    pub network_mode: String,
    /// The PID namespace: empty, `host`, `container:<id>`.
    #[serde(deserialize_with = "de::nullable")]
    pub pid_mode: String,
    /// The IPC namespace: empty, `none`, `private`, `shareable`, `host`, `container:<id>`.
    #[serde(deserialize_with = "de::nullable")]
    pub ipc_mode: String,
    /// The UTS namespace: empty or `host`.
    #[serde(rename = "UTSMode", deserialize_with = "de::nullable")]
    pub uts_mode: String,
    /// The user namespace: empty or `host`.
    #[serde(deserialize_with = "de::nullable")]
    pub userns_mode: String,
    /// The cgroup namespace: empty, `private`, `host`.
    #[serde(deserialize_with = "de::nullable")]
    pub cgroupns_mode: String,
    /// Security options, e.g. `seccomp=unconfined`, `apparmor=unconfined`,
    /// `no-new-privileges`.
    #[serde(deserialize_with = "de::strings")]
    pub security_opt: Vec<String>,
    /// Namespaced kernel parameters (`--sysctl`).
    #[serde(deserialize_with = "de::string_map")]
    pub sysctls: BTreeMap<String, String>,
    /// The OCI runtime, e.g. `runc`; empty is the engine's default.
    #[serde(deserialize_with = "de::nullable")]
    pub runtime: String,
    /// Containers whose volumes are mounted too (`--volumes-from`).
    #[serde(deserialize_with = "de::strings")]
    pub volumes_from: Vec<String>,
    /// The parent cgroup (`--cgroup-parent`).
    #[serde(deserialize_with = "de::nullable")]
    pub cgroup_parent: String,
    /// A read-only root filesystem (`--read-only`).
    #[serde(deserialize_with = "de::nullable")]
    pub readonly_rootfs: bool,
    /// Paths under /proc and /sys masked in the container; `None` (absent or `null`) means
    /// the engine's defaults, a list replaces them (`--security-opt systempaths=unconfined`
    /// sends an empty one).
    #[serde(deserialize_with = "de::optional_strings")]
    pub masked_paths: Option<Vec<String>>,
    /// Paths under /proc made read-only; `None` means the engine's defaults, as
    /// `masked_paths`.
    #[serde(deserialize_with = "de::optional_strings")]
    pub readonly_paths: Option<Vec<String>>,
}

impl HostConfig {
    /// The host paths bind-mounted into the container, from `Binds` (sources that are
    /// absolute paths; others name volumes) and from `Mounts` of type `bind`.
    pub fn bind_sources(&self) -> Vec<&str> {
        let binds = self.binds.iter().filter_map(|b| {
            // `[source:]target[:options]`; with one part there is no source (an anonymous
            // volume at target).
            let (source, _) = b.split_once(':')?;
            source.starts_with('/').then_some(source)
        });
        let mounts = self
            .mounts
            .iter()
            .filter(|m| m.type_ == "bind")
            .map(|m| m.source.as_str());
        binds.chain(mounts).collect()
    }
}

/// One entry of `Mounts` (`--mount`), for containers and services.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Mount {
    /// `bind`, `volume`, `tmpfs`, `npipe`, `cluster`, `image`.
    #[serde(rename = "Type", deserialize_with = "de::nullable")]
    pub type_: String,
    /// The host path (bind), volume name (volume), or empty.
    #[serde(deserialize_with = "de::nullable")]
    pub source: String,
    /// The path in the container.
    #[serde(deserialize_with = "de::nullable")]
    pub target: String,
    /// Mounted read-only.
    #[serde(deserialize_with = "de::nullable")]
    pub read_only: bool,
    /// Options of a bind mount.
    #[serde(deserialize_with = "de::nullable")]
    pub bind_options: BindOptions,
    /// Options of a volume mount.
    #[serde(deserialize_with = "de::nullable")]
    pub volume_options: VolumeOptions,
}

/// `BindOptions` of a mount.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct BindOptions {
    /// Mount propagation: `private`, `rprivate`, `shared`, `rshared`, `slave`, `rslave`.
    #[serde(deserialize_with = "de::nullable")]
    pub propagation: String,
    /// Do not mount submounts recursively.
    #[serde(deserialize_with = "de::nullable")]
    pub non_recursive: bool,
    /// Create the source path on the host if it is missing.
    #[serde(deserialize_with = "de::nullable")]
    pub create_mountpoint: bool,
}

/// `VolumeOptions` of a mount.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct VolumeOptions {
    /// Do not copy the image's data into a new volume.
    #[serde(deserialize_with = "de::nullable")]
    pub no_copy: bool,
    /// Labels of a volume created by this mount.
    #[serde(deserialize_with = "de::string_map")]
    pub labels: BTreeMap<String, String>,
    /// The volume driver and its options.
    #[serde(deserialize_with = "de::nullable")]
    pub driver_config: DriverConfig,
    /// A path inside the volume to mount instead of its root.
    #[serde(deserialize_with = "de::nullable")]
    pub subpath: String,
}

/// A volume driver and its options (the `local` driver's `type`/`device`/`o` can mount host
/// paths and network filesystems).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct DriverConfig {
    /// The driver name.
    #[serde(deserialize_with = "de::nullable")]
    pub name: String,
    /// The driver options.
    #[serde(deserialize_with = "de::string_map")]
    pub options: BTreeMap<String, String>,
}

/// One entry of `Devices` (`--device`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct DeviceMapping {
    /// The device on the host, e.g. `/dev/sda`.
    #[serde(deserialize_with = "de::nullable")]
    pub path_on_host: String,
    /// Where it appears in the container.
    #[serde(deserialize_with = "de::nullable")]
    pub path_in_container: String,
    /// Cgroup permissions, e.g. `rwm`.
    #[serde(deserialize_with = "de::nullable")]
    pub cgroup_permissions: String,
}

/// One entry of `DeviceRequests` (`--gpus`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct DeviceRequest {
    /// The driver, e.g. `nvidia`.
    #[serde(deserialize_with = "de::nullable")]
    pub driver: String,
    /// How many devices; `-1` means all.
    #[serde(deserialize_with = "de::nullable")]
    pub count: i64,
    /// Specific device ids.
    #[serde(rename = "DeviceIDs", deserialize_with = "de::strings")]
    pub device_ids: Vec<String>,
    /// Alternative sets of required capabilities, e.g. `[["gpu"]]`.
    #[serde(deserialize_with = "de::string_lists")]
    pub capabilities: Vec<Vec<String>>,
    /// Driver options.
    #[serde(deserialize_with = "de::string_map")]
    pub options: BTreeMap<String, String>,
}

/// The body of `POST /containers/{id}/exec` (endpoint `container.exec`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ExecCreate {
    /// The command.
    #[serde(deserialize_with = "de::strings")]
    pub cmd: Vec<String>,
    /// The user; empty means the container's.
    #[serde(deserialize_with = "de::nullable")]
    pub user: String,
    /// Full privileges on the host (`docker exec --privileged`).
    #[serde(deserialize_with = "de::nullable")]
    pub privileged: bool,
    /// Allocate a terminal.
    #[serde(deserialize_with = "de::nullable")]
    pub tty: bool,
    /// Attach standard input.
    #[serde(deserialize_with = "de::nullable")]
    pub attach_stdin: bool,
    /// Attach standard output.
    #[serde(deserialize_with = "de::nullable")]
    pub attach_stdout: bool,
    /// Attach standard error.
    #[serde(deserialize_with = "de::nullable")]
    pub attach_stderr: bool,
    /// Environment variables, `NAME=value`.
    #[serde(deserialize_with = "de::strings")]
    pub env: Vec<String>,
    /// The working directory.
    #[serde(deserialize_with = "de::nullable")]
    pub working_dir: String,
}

/// The body of `POST /services/create` and `POST /services/{id}/update` (endpoints
/// `service.create`, `service.update`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ServiceSpec {
    /// The service name.
    #[serde(deserialize_with = "de::nullable")]
    pub name: String,
    /// The service's labels.
    #[serde(deserialize_with = "de::string_map")]
    pub labels: BTreeMap<String, String>,
    /// What each task runs.
    #[serde(deserialize_with = "de::nullable")]
    pub task_template: TaskSpec,
}

/// `TaskTemplate` of a service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct TaskSpec {
    /// The container each task runs.
    #[serde(deserialize_with = "de::nullable")]
    pub container_spec: ContainerSpec,
    /// `container` (the default when empty), `plugin` or `attachment`. A `plugin` task
    /// installs an engine plugin, which runs with host privileges.
    #[serde(deserialize_with = "de::nullable")]
    pub runtime: String,
}

/// `TaskTemplate.ContainerSpec` of a service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ContainerSpec {
    /// The image reference.
    #[serde(deserialize_with = "de::nullable")]
    pub image: String,
    /// The containers' labels.
    #[serde(deserialize_with = "de::string_map")]
    pub labels: BTreeMap<String, String>,
    /// The command (replaces the image's entrypoint).
    #[serde(deserialize_with = "de::strings")]
    pub command: Vec<String>,
    /// Arguments to the command.
    #[serde(deserialize_with = "de::strings")]
    pub args: Vec<String>,
    /// Environment variables, `NAME=value`.
    #[serde(deserialize_with = "de::strings")]
    pub env: Vec<String>,
    /// The user.
    #[serde(deserialize_with = "de::nullable")]
    pub user: String,
    /// Additional groups.
    #[serde(deserialize_with = "de::strings")]
    pub groups: Vec<String>,
    /// Security settings.
    #[serde(deserialize_with = "de::nullable")]
    pub privileges: Privileges,
    /// Mounts.
    #[serde(deserialize_with = "de::list")]
    pub mounts: Vec<Mount>,
    /// Capabilities added.
    #[serde(deserialize_with = "de::strings")]
    pub capability_add: Vec<String>,
    /// Capabilities dropped.
    #[serde(deserialize_with = "de::strings")]
    pub capability_drop: Vec<String>,
    /// Namespaced kernel parameters.
    #[serde(deserialize_with = "de::string_map")]
    pub sysctls: BTreeMap<String, String>,
    /// A read-only root filesystem.
    #[serde(deserialize_with = "de::nullable")]
    pub read_only: bool,
}

/// `Privileges` of a service's container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Privileges {
    /// SELinux labels.
    #[serde(rename = "SELinuxContext", deserialize_with = "de::nullable")]
    pub selinux_context: SelinuxContext,
    /// Seccomp profile.
    #[serde(deserialize_with = "de::nullable")]
    pub seccomp: Seccomp,
    /// AppArmor profile.
    #[serde(deserialize_with = "de::nullable")]
    pub app_armor: AppArmor,
    /// Forbid gaining privileges (setuid binaries).
    #[serde(deserialize_with = "de::nullable")]
    pub no_new_privileges: bool,
}

/// `Privileges.SELinuxContext`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct SelinuxContext {
    /// SELinux labeling disabled.
    #[serde(deserialize_with = "de::nullable")]
    pub disable: bool,
    /// The SELinux user.
    #[serde(deserialize_with = "de::nullable")]
    pub user: String,
    /// The SELinux role.
    #[serde(deserialize_with = "de::nullable")]
    pub role: String,
    /// The SELinux type.
    #[serde(rename = "Type", deserialize_with = "de::nullable")]
    pub type_: String,
    /// The SELinux level.
    #[serde(deserialize_with = "de::nullable")]
    pub level: String,
}

/// `Privileges.Seccomp`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Seccomp {
    /// `default`, `unconfined` or `custom`.
    #[serde(deserialize_with = "de::nullable")]
    pub mode: String,
    /// The custom profile (JSON).
    #[serde(deserialize_with = "de::nullable")]
    pub profile: String,
}

/// `Privileges.AppArmor`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct AppArmor {
    /// `default` or `disabled`.
    #[serde(deserialize_with = "de::nullable")]
    pub mode: String,
}

/// The fields of a create or update body that carry labels, and nothing else: `Labels`
/// (containers, volumes, networks, services, configs, secrets) and, in a service spec,
/// `TaskTemplate`, which holds `ContainerSpec.Labels`. Each is the JSON as sent, `None` when
/// absent or `null`. Read with [`Request::body_as`](crate::Request::body_as), it skips the
/// rest of the body.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct LabelFields {
    /// `Labels`.
    pub labels: Option<serde_json::Value>,
    /// `TaskTemplate` (services only).
    pub task_template: Option<serde_json::Value>,
}

impl LabelFields {
    /// `TaskTemplate.ContainerSpec`, if present.
    pub fn container_spec(&self) -> Option<&serde_json::Value> {
        self.task_template.as_ref()?.get("ContainerSpec")
    }
}

/// Deserializers with Go's `encoding/json` leniency towards `null`.
mod de {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer};

    /// `null` is the zero value.
    pub fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + Default,
    {
        Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
    }

    /// A list of which `null` and `null` items are the zero value.
    pub fn list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + Default,
    {
        let items = Option::<Vec<Option<T>>>::deserialize(d)?.unwrap_or_default();
        Ok(items.into_iter().map(Option::unwrap_or_default).collect())
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum StrSlice {
        One(String),
        Many(Vec<Option<String>>),
    }

    /// A list of strings, which may also be sent as one string; `null`s are empty.
    pub fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        Ok(match Option::<StrSlice>::deserialize(d)? {
            None => Vec::new(),
            Some(StrSlice::One(s)) => vec![s],
            Some(StrSlice::Many(items)) => {
                items.into_iter().map(Option::unwrap_or_default).collect()
            }
        })
    }

    /// A list of strings that is `None` when absent or `null` (the engine's default), as
    /// distinct from an empty list; `null` items are empty.
    pub fn optional_strings<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<String>>, D::Error> {
        let items = Option::<Vec<Option<String>>>::deserialize(d)?;
        Ok(items.map(|l| l.into_iter().map(Option::unwrap_or_default).collect()))
    }

    /// A list of lists of strings; `null`s are empty.
    pub fn string_lists<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<String>>, D::Error> {
        let lists = Option::<Vec<Option<Vec<Option<String>>>>>::deserialize(d)?.unwrap_or_default();
        Ok(lists
            .into_iter()
            .map(|l| {
                l.unwrap_or_default()
                    .into_iter()
                    .map(Option::unwrap_or_default)
                    .collect()
            })
            .collect())
    }

    /// A string map; a `null` value is an empty string, and the key is still present.
    pub fn string_map<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, String>, D::Error> {
        let map = Option::<BTreeMap<String, Option<String>>>::deserialize(d)?.unwrap_or_default();
        Ok(map
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn create(body: Value) -> ContainerCreate {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn docker_cli_create() {
        let c = create(json!({
            "Image": "busybox", "Cmd": ["sh", "-c", "id"], "Env": ["A=1"], "User": "1000:1000",
            "Labels": {"com.acme.team": "blue"},
            "HostConfig": {
                "Privileged": true, "Binds": ["/:/host:ro", "data:/data", "/anon"],
                "Mounts": [{"Type": "bind", "Source": "/etc", "Target": "/x", "ReadOnly": true,
                            "BindOptions": {"Propagation": "rshared", "CreateMountpoint": true}},
                           {"Type": "volume", "Source": "v", "Target": "/v",
                            "VolumeOptions": {"NoCopy": true, "Labels": {"a": "b"},
                              "DriverConfig": {"Name": "local", "Options": {"type": "nfs"}}}}],
                "CapAdd": ["SYS_ADMIN"], "CapDrop": ["ALL"],
                "Devices": [{"PathOnHost": "/dev/kmsg", "PathInContainer": "/dev/kmsg", "CgroupPermissions": "rwm"}],
                "DeviceRequests": [{"Driver": "nvidia", "Count": -1, "DeviceIDs": ["0"], "Capabilities": [["gpu"]], "Options": {}}],
                "DeviceCgroupRules": ["c 1:3 mr"],
                "NetworkMode": "host", "PidMode": "host", "IpcMode": "host", "UTSMode": "host",
                "UsernsMode": "host", "CgroupnsMode": "host",
                "SecurityOpt": ["seccomp=unconfined"], "Sysctls": {"net.ipv4.ip_forward": "1"},
                "Runtime": "runc", "VolumesFrom": ["other:ro"], "CgroupParent": "/x", "ReadonlyRootfs": true,
                "Unknown": {"ignored": [1, 2]}
            }
        }));
        assert_eq!(c.image, "busybox");
        assert_eq!(c.cmd, ["sh", "-c", "id"]);
        assert_eq!(c.user, "1000:1000");
        assert_eq!(c.labels["com.acme.team"], "blue");
        let h = &c.host_config;
        assert!(h.privileged && h.readonly_rootfs);
        assert_eq!(h.bind_sources(), ["/", "/etc"]);
        assert_eq!(h.mounts[0].bind_options.propagation, "rshared");
        assert!(h.mounts[0].read_only && h.mounts[0].bind_options.create_mountpoint);
        assert_eq!(
            h.mounts[1].volume_options.driver_config.options["type"],
            "nfs"
        );
        assert!(h.mounts[1].volume_options.no_copy);
        assert_eq!(
            (h.cap_add.as_slice(), h.cap_drop.as_slice()),
            (&["SYS_ADMIN".to_owned()][..], &["ALL".to_owned()][..])
        );
        assert_eq!(h.devices[0].path_on_host, "/dev/kmsg");
        assert_eq!(h.device_requests[0].count, -1);
        assert_eq!(h.device_requests[0].device_ids, ["0"]);
        assert_eq!(h.device_requests[0].capabilities, [["gpu"]]);
        assert_eq!(h.device_cgroup_rules, ["c 1:3 mr"]);
        for mode in [
            &h.network_mode,
            &h.pid_mode,
            &h.ipc_mode,
            &h.uts_mode,
            &h.userns_mode,
            &h.cgroupns_mode,
        ] {
            assert_eq!(mode, "host");
        }
        assert_eq!(h.security_opt, ["seccomp=unconfined"]);
        assert_eq!(h.sysctls["net.ipv4.ip_forward"], "1");
        assert_eq!(
            (h.runtime.as_str(), h.cgroup_parent.as_str()),
            ("runc", "/x")
        );
        assert_eq!(h.volumes_from, ["other:ro"]);
    }

    /// What docker-py 7 sends for `containers.create("busybox")`: explicit nulls and
    /// defaults everywhere.
    #[test]
    fn system_paths_tell_default_from_empty() {
        let h = |v: Value| create(json!({"HostConfig": v})).host_config;
        assert_eq!(h(json!({})).masked_paths, None);
        assert_eq!(h(json!({"MaskedPaths": null})).masked_paths, None);
        assert_eq!(h(json!({"MaskedPaths": []})).masked_paths, Some(vec![]));
        assert_eq!(
            h(json!({"ReadonlyPaths": ["/proc/sys", null]})).readonly_paths,
            Some(vec!["/proc/sys".to_owned(), String::new()])
        );
    }

    #[test]
    fn docker_py_explicit_defaults() {
        let c = create(json!({
            "Hostname": null, "Domainname": null, "ExposedPorts": null, "User": null,
            "Tty": false, "OpenStdin": false, "StdinOnce": false, "AttachStdin": false,
            "AttachStdout": false, "AttachStderr": false, "Env": null, "Cmd": null,
            "Image": "busybox", "Volumes": null, "NetworkDisabled": false, "Entrypoint": null,
            "WorkingDir": null, "Labels": null, "StopSignal": null, "Healthcheck": null,
            "StopTimeout": null, "Runtime": null, "MacAddress": null,
            "HostConfig": {"NetworkMode": "default", "CapAdd": null, "CapDrop": null,
                           "Binds": null, "Mounts": null, "Privileged": null, "Devices": null,
                           "DeviceRequests": null, "Sysctls": null, "SecurityOpt": null}
        }));
        assert_eq!(c.image, "busybox");
        assert_eq!(c.host_config.network_mode, "default");
        assert!(!c.host_config.privileged);
        assert_eq!(
            c,
            ContainerCreate {
                image: "busybox".into(),
                host_config: HostConfig {
                    network_mode: "default".into(),
                    ..HostConfig::default()
                },
                ..ContainerCreate::default()
            }
        );
    }

    #[test]
    fn nulls_inside_are_zero_values() {
        let c = create(json!({
            "Env": [null, "A=1"], "Labels": {"owner": null},
            "HostConfig": null
        }));
        assert_eq!(c.env, ["", "A=1"]);
        // A label with a null value still exists (as ""), exactly as the engine stores it.
        assert_eq!(c.labels.get("owner").map(String::as_str), Some(""));
        assert_eq!(c.host_config, HostConfig::default());
        let h: HostConfig = serde_json::from_value(json!({
            "Mounts": [null, {"Type": null, "Source": "/x", "BindOptions": null}],
            "DeviceRequests": [{"Capabilities": [null, ["gpu", null]], "Options": {"k": null}}]
        }))
        .unwrap();
        assert_eq!(h.mounts[0], Mount::default());
        assert_eq!(h.mounts[1].source, "/x");
        assert_eq!(
            h.device_requests[0].capabilities,
            vec![vec![], vec!["gpu".to_owned(), String::new()]]
        );
        assert_eq!(h.device_requests[0].options["k"], "");
    }

    #[test]
    fn str_slice_accepts_a_string() {
        let c = create(json!({"Cmd": "echo hi", "Entrypoint": "/bin/sh"}));
        assert_eq!(c.cmd, ["echo hi"]);
        assert_eq!(c.entrypoint, ["/bin/sh"]);
    }

    #[test]
    fn empty_body_is_all_defaults() {
        assert_eq!(create(json!({})), ContainerCreate::default());
    }

    #[test]
    fn wrong_types_fail() {
        assert!(serde_json::from_value::<ContainerCreate>(json!({"Image": 5})).is_err());
        assert!(serde_json::from_value::<ContainerCreate>(json!({"Labels": ["a"]})).is_err());
    }

    #[test]
    fn bind_sources_skip_volumes() {
        let h = HostConfig {
            binds: vec!["vol:/data".into(), "/anon".into(), "/srv:/srv:rw".into()],
            mounts: vec![Mount {
                type_: "volume".into(),
                source: "v".into(),
                ..Mount::default()
            }],
            ..HostConfig::default()
        };
        assert_eq!(h.bind_sources(), ["/srv"]);
    }

    #[test]
    fn exec_create() {
        let e: ExecCreate = serde_json::from_value(json!({
            "User": "root", "Privileged": true, "Tty": true, "AttachStdin": true,
            "AttachStdout": true, "AttachStderr": null, "DetachKeys": "", "Env": null,
            "Cmd": ["sh"], "WorkingDir": null
        }))
        .unwrap();
        assert_eq!(e.cmd, ["sh"]);
        assert!(e.privileged && e.tty && e.attach_stdin && e.attach_stdout && !e.attach_stderr);
        assert_eq!(e.user, "root");
        assert!(e.env.is_empty());
    }

    #[test]
    fn service_spec() {
        let s: ServiceSpec = serde_json::from_value(json!({
            "Name": "web", "Labels": {"com.acme.team": "blue"},
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": "nginx", "Command": null, "Args": ["-g", "daemon off;"],
                    "Mounts": [{"Type": "bind", "Source": "/var/run/docker.sock", "Target": "/s"}],
                    "Privileges": {"SELinuxContext": {"Disable": true, "Type": "spc_t"},
                                   "Seccomp": {"Mode": "unconfined"}, "AppArmor": {"Mode": "disabled"},
                                   "NoNewPrivileges": false, "CredentialSpec": null},
                    "CapabilityAdd": ["CAP_SYS_ADMIN"], "CapabilityDrop": null,
                    "Sysctls": {"a": "b"}, "ReadOnly": true, "TTY": true
                },
                "Runtime": "container", "Placement": {}
            },
            "Mode": {"Replicated": {"Replicas": 1}}
        }))
        .unwrap();
        assert_eq!(s.name, "web");
        assert_eq!(s.labels["com.acme.team"], "blue");
        let c = &s.task_template.container_spec;
        assert_eq!(c.image, "nginx");
        assert!(c.command.is_empty());
        assert_eq!(c.args, ["-g", "daemon off;"]);
        assert_eq!(c.mounts[0].source, "/var/run/docker.sock");
        assert!(c.privileges.selinux_context.disable);
        assert_eq!(c.privileges.selinux_context.type_, "spc_t");
        assert_eq!(c.privileges.seccomp.mode, "unconfined");
        assert_eq!(c.privileges.app_armor.mode, "disabled");
        assert_eq!(c.capability_add, ["CAP_SYS_ADMIN"]);
        assert!(c.read_only);
        assert_eq!(s.task_template.runtime, "container");
    }

    #[test]
    fn serializes_with_docker_names() {
        let v = serde_json::to_value(HostConfig {
            uts_mode: "host".into(),
            ..HostConfig::default()
        })
        .unwrap();
        assert_eq!(v["UTSMode"], "host");
        assert_eq!(v["Privileged"], false);
        let v = serde_json::to_value(DeviceRequest::default()).unwrap();
        assert!(v.get("DeviceIDs").is_some());
    }
}
