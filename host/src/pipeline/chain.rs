//! The plugin chain, in Kubernetes admission order: mutating plugins in configuration order
//! (each sees the previous one's result), then every validating plugin on the final request
//! (all run, so a denial lists every objection), then — after the engine answered — response
//! plugins, which may filter or rewrite a JSON response. Modes and failure policy are applied
//! here: plugins in `dry-run` mode only log and record what they would have done; a failing plugin denies unless
//! the operator set `fail_open`.

use std::sync::Arc;

use http::StatusCode;
use tracing::{info, warn};

use super::canonical::PatchError;
use crate::audit::{Note, Outcome};
use crate::config::{Mode, Phase};
use crate::error::{DockerError, IntoDockerError};
use crate::model::{self, Hooks, Verdict};
use crate::plugin::{Hook, Kept, Plugin, PluginFailure};

/// Why the chain refused a request or response.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// One or more plugins denied.
    #[error("{}", .denials.iter().map(|(p, m)| format!("{p}: {m}")).collect::<Vec<_>>().join("; "))]
    Denied {
        status: StatusCode,
        denials: Vec<(String, String)>,
    },
    /// A plugin failed and its failure policy is fail-closed.
    #[error("{plugin}: plugin {failure}; request denied (fail-closed)")]
    Failed {
        plugin: String,
        failure: PluginFailure,
    },
}

impl IntoDockerError for ChainError {
    fn to_docker_error(&self) -> DockerError {
        let status = match self {
            ChainError::Denied { status, .. } => *status,
            ChainError::Failed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        DockerError::new(status, self.to_string())
    }
}

/// What a plugin asks to change; applied by the caller, which owns the canonical request.
pub trait Patchable {
    /// Applies a patch; an error means the patch is malformed for this request.
    fn apply(&mut self, patch: &model::Patch) -> Result<(), PatchError>;
    /// The plugin-facing view after changes.
    fn view(&self) -> &model::Request;
}

/// What each plugin answered for one request, kept for the audit record. Collects nothing
/// unless enabled, so a gateway without an audit store pays nothing for it.
#[derive(Debug, Default, Clone)]
pub struct Trace {
    enabled: bool,
    /// The answers, in the order the plugins ran.
    pub notes: Vec<Note>,
}

impl Trace {
    /// A trace that records every plugin answer.
    pub fn enabled() -> Self {
        Self {
            enabled: true,
            notes: Vec::new(),
        }
    }

    fn push(
        &mut self,
        plugin: &str,
        hook: &str,
        verdict: Outcome,
        message: Option<String>,
        patch: Option<&model::Patch>,
    ) {
        if self.enabled {
            self.notes.push(Note {
                plugin: plugin.to_owned(),
                hook: hook.to_owned(),
                verdict,
                message,
                patch: patch.map(patch_json),
            });
        }
    }
}

/// A patch as JSON for the record. Values of credential headers a plugin sets are replaced,
/// so that no credential reaches the audit trail.
fn patch_json(p: &model::Patch) -> serde_json::Value {
    use serde_json::{json, Value};
    let edits = |edits: &[model::Edit], headers: bool| -> Vec<Value> {
        edits
            .iter()
            .map(|e| match e {
                model::Edit::Set(pair) => {
                    let secret = headers
                        && super::CREDENTIAL_HEADERS
                            .contains(&pair.name.to_ascii_lowercase().as_str());
                    let value = if secret {
                        "<redacted>"
                    } else {
                        pair.value.as_str()
                    };
                    json!({"set": {"name": pair.name, "value": value}})
                }
                model::Edit::Remove(name) => json!({"remove": name}),
            })
            .collect()
    };
    let mut out = serde_json::Map::new();
    if let Some(ops) = &p.body {
        let ops = serde_json::from_str(ops).unwrap_or_else(|_| Value::String(ops.clone()));
        out.insert("body".into(), ops);
    }
    if !p.headers.is_empty() {
        out.insert("headers".into(), Value::Array(edits(&p.headers, true)));
    }
    if !p.query.is_empty() {
        out.insert("query".into(), Value::Array(edits(&p.query, false)));
    }
    Value::Object(out)
}

/// Instances that ran a request's request hooks, kept for its response hooks
/// ([`Plugin::invoke_request`]): a plugin with both hooks then costs one instance per
/// request. Whatever is still held when this is dropped (a denied request, a response that
/// is not JSON) goes back for teardown.
#[derive(Default)]
pub struct Held {
    keep: bool,
    instances: Vec<Kept>,
}

impl Held {
    /// Keeps the instances of plugins that will also see this request's response: only for
    /// responses that are read whole (not streams), so that the engine answers while they
    /// wait.
    pub fn keeping() -> Self {
        Self {
            keep: true,
            instances: Vec::new(),
        }
    }

    fn take(&mut self, plugin: &Plugin) -> Option<Kept> {
        let i = self.instances.iter().position(|k| k.belongs_to(plugin))?;
        Some(self.instances.swap_remove(i))
    }
}

/// The configured plugins.
#[derive(Default, Clone)]
pub struct Chain {
    plugins: Vec<Arc<Plugin>>,
}

impl Chain {
    /// A chain of `plugins` in configuration order.
    pub fn new(plugins: Vec<Arc<Plugin>>) -> Self {
        Self { plugins }
    }

    /// Starts preparing instances ahead of calls (`runtime.prepared_instances` per plugin,
    /// within the runtime's budget: [`crate::plugin::prepare`]). Needs a tokio runtime.
    pub fn prepare(&self, runtime: &crate::config::RuntimeConfig) {
        crate::plugin::prepare(&self.plugins, runtime.prepared_instances);
    }

    /// How many plugins are configured.
    pub fn len(&self) -> usize {
        self.plugins.len()
    }

    /// Whether no plugin is configured.
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    /// Whether any plugin looks at requests to `endpoint`.
    pub fn wants_request(&self, endpoint: &str) -> bool {
        self.plugins
            .iter()
            .any(|p| p.hooks(Hooks::REQUEST, endpoint))
    }

    /// Whether any plugin looks at responses of `endpoint`.
    pub fn wants_response(&self, endpoint: &str) -> bool {
        self.plugins
            .iter()
            .any(|p| p.hooks(Hooks::RESPONSE, endpoint))
    }

    /// Whether any plugin shapes the audit records of `endpoint`.
    pub fn wants_audit(&self, endpoint: &str) -> bool {
        self.plugins.iter().any(|p| p.hooks(Hooks::AUDIT, endpoint))
    }

    /// Runs the audit hooks in order on `record` (a JSON object as text), each seeing the
    /// previous one's result. The record is always written: a denial is ignored and a
    /// failing plugin leaves the record as it was; both are noted in `trace` and logged.
    pub async fn on_audit(
        &self,
        id: u64,
        req: &model::Request,
        record: &mut String,
        trace: &mut Trace,
        mut apply: impl FnMut(&mut String, &model::Patch) -> Result<(), PatchError>,
    ) {
        for p in self.selected(&req.endpoint, Hooks::AUDIT) {
            let name = p.name();
            let (verdict, message) = match p.invoke(id, Hook::Audit(req, record)).await {
                Ok(Verdict::Allow) => (Outcome::Allow, None),
                Ok(Verdict::Deny(d)) => {
                    info!(id, plugin = name, message = %d.message, "audit hook denied; ignored, the record is written");
                    (Outcome::Ignored, Some(d.message))
                }
                Ok(Verdict::Patch(_)) if p.mode() == Mode::DryRun => (Outcome::WouldPatch, None),
                Ok(Verdict::Patch(patch)) => match apply(record, &patch) {
                    Ok(()) => (Outcome::Patch, None),
                    Err(why) => {
                        p.count_failure(&PluginFailure::Malformed(why.to_string()));
                        warn!(id, plugin = name, error = %why, "audit hook returned a malformed patch; record kept as it was");
                        (
                            Outcome::Failed,
                            Some(PluginFailure::Malformed(why.to_string()).to_string()),
                        )
                    }
                },
                Err(failure) => {
                    warn!(id, plugin = name, error = %failure, "audit hook failed; record kept as it was");
                    (Outcome::Failed, Some(failure.to_string()))
                }
            };
            trace.push(name, "audit", verdict, message, None);
        }
    }

    fn selected<'a>(
        &'a self,
        endpoint: &'a str,
        hook: Hooks,
    ) -> impl Iterator<Item = &'a Arc<Plugin>> + 'a {
        self.plugins.iter().filter(move |p| p.hooks(hook, endpoint))
    }

    /// Runs the request hooks of mutating plugins in order, each on the previous one's result.
    /// Then [`Chain::validate`] judges the result.
    pub async fn mutate(
        &self,
        id: u64,
        req: &mut impl Patchable,
        trace: &mut Trace,
        held: &mut Held,
    ) -> Result<(), ChainError> {
        let endpoint = req.view().endpoint.clone();
        for p in self.selected(&endpoint, Hooks::REQUEST) {
            if p.phase() != Phase::Mutate {
                continue;
            }
            let verdict = self.request_hook(p, id, req.view(), held).await;
            if let Some(denial) =
                self.settle(id, p, verdict, trace, "request", |patch| req.apply(patch))?
            {
                return Err(denied(vec![denial]));
            }
        }
        Ok(())
    }

    /// Runs the request hooks of every validating plugin on the final request; any denial
    /// refuses it, and the error lists them all.
    pub async fn validate(
        &self,
        id: u64,
        req: &impl Patchable,
        trace: &mut Trace,
        held: &mut Held,
    ) -> Result<(), ChainError> {
        let endpoint = req.view().endpoint.clone();
        let mut denials = Vec::new();
        for p in self.selected(&endpoint, Hooks::REQUEST) {
            if p.phase() != Phase::Validate {
                continue;
            }
            let verdict = self.request_hook(p, id, req.view(), held).await;
            let no_patches =
                |_: &model::Patch| Err(PatchError::NotHere("validating plugins cannot patch"));
            if let Some(denial) = self.settle(id, p, verdict, trace, "request", no_patches)? {
                denials.push(denial);
            }
        }
        if denials.is_empty() {
            Ok(())
        } else {
            Err(denied(denials))
        }
    }

    /// One request hook call, keeping the instance in `held` when the plugin will see the
    /// response too.
    async fn request_hook(
        &self,
        p: &Plugin,
        id: u64,
        req: &model::Request,
        held: &mut Held,
    ) -> Result<Verdict, PluginFailure> {
        let keep = held.keep && p.hooks(Hooks::RESPONSE, &req.endpoint);
        let (verdict, kept) = p.invoke_request(id, req, keep).await;
        held.instances.extend(kept);
        verdict
    }

    /// Runs the response hooks in order; each may patch `resp` (through `apply`). A plugin
    /// whose request hook instance was kept in `held` answers in that instance.
    pub async fn on_response(
        &self,
        id: u64,
        req: &model::Request,
        resp: &mut model::Response,
        trace: &mut Trace,
        held: &mut Held,
        mut apply: impl FnMut(&mut model::Response, &model::Patch) -> Result<(), PatchError>,
    ) -> Result<(), ChainError> {
        for p in self.selected(&req.endpoint, Hooks::RESPONSE) {
            let verdict = p
                .invoke_kept(held.take(p), id, Hook::Response(req, resp))
                .await;
            if let Some(denial) = self.settle(id, p, verdict, trace, "response", |patch| {
                apply(resp, patch)
            })? {
                return Err(denied(vec![denial]));
            }
        }
        Ok(())
    }

    /// Applies mode and failure policy to one verdict. Returns an enforced denial, if any.
    fn settle(
        &self,
        id: u64,
        p: &Plugin,
        verdict: Result<Verdict, PluginFailure>,
        trace: &mut Trace,
        hook: &str,
        apply: impl FnOnce(&model::Patch) -> Result<(), PatchError>,
    ) -> Result<Option<(StatusCode, String, String)>, ChainError> {
        let name = p.name();
        let dry_run = p.mode() == Mode::DryRun;
        let failure = match verdict {
            Ok(Verdict::Allow) => {
                trace.push(name, hook, Outcome::Allow, None, None);
                return Ok(None);
            }
            Ok(Verdict::Deny(d)) => {
                let status = StatusCode::from_u16(d.status)
                    .ok()
                    .filter(|s| s.is_client_error() || s.is_server_error())
                    .unwrap_or(StatusCode::FORBIDDEN);
                if dry_run {
                    info!(id, plugin = name, message = %d.message, "would deny (dry-run mode)");
                    trace.push(name, hook, Outcome::WouldDeny, Some(d.message), None);
                    return Ok(None);
                }
                trace.push(name, hook, Outcome::Deny, Some(d.message.clone()), None);
                return Ok(Some((status, name.to_owned(), d.message)));
            }
            Ok(Verdict::Patch(patch)) => {
                if dry_run {
                    info!(id, plugin = name, "would patch (dry-run mode)");
                    trace.push(name, hook, Outcome::WouldPatch, None, Some(&patch));
                    return Ok(None);
                }
                match apply(&patch) {
                    Ok(()) => {
                        trace.push(name, hook, Outcome::Patch, None, Some(&patch));
                        return Ok(None);
                    }
                    Err(why) => {
                        let failure = PluginFailure::Malformed(why.to_string());
                        p.count_failure(&failure);
                        failure
                    }
                }
            }
            Err(failure) => failure,
        };
        if p.config().fail_open || dry_run {
            warn!(id, plugin = name, error = %failure, "plugin failed; letting the request through (fail_open)");
            trace.push(
                name,
                hook,
                Outcome::FailedOpen,
                Some(failure.to_string()),
                None,
            );
            return Ok(None);
        }
        warn!(id, plugin = name, error = %failure, "plugin failed; denying (fail-closed)");
        trace.push(name, hook, Outcome::Failed, Some(failure.to_string()), None);
        Err(ChainError::Failed {
            plugin: name.to_owned(),
            failure,
        })
    }
}

fn denied(denials: Vec<(StatusCode, String, String)>) -> ChainError {
    let status = denials[0].0;
    ChainError::Denied {
        status,
        denials: denials.into_iter().map(|(_, p, m)| (p, m)).collect(),
    }
}
