//! The plugin chain, in Kubernetes admission order: mutating plugins in configuration order
//! (each sees the previous one's result), then every validating plugin on the final request
//! (all run, so a denial lists every objection), then — after the engine answered — response
//! plugins, which may filter or rewrite a JSON response. Modes and failure policy are applied
//! here: `audit` plugins only log what they would have done; a failing plugin denies unless
//! the operator set `fail_open`.

use std::sync::Arc;

use http::StatusCode;
use tracing::{info, warn};

use crate::config::{Mode, Phase};
use crate::error::{DockerError, IntoDockerError};
use crate::plugin::types::{self, Hooks, Verdict};
use crate::plugin::{Hook, Plugin, PluginFailure};

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
    fn apply(&mut self, patch: &types::Patch) -> Result<(), String>;
    /// The plugin-facing view after changes.
    fn view(&self) -> &types::Request;
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
            .any(|p| p.has(Hooks::REQUEST) && p.applies_to(endpoint))
    }

    /// Whether any plugin looks at responses of `endpoint`.
    pub fn wants_response(&self, endpoint: &str) -> bool {
        self.plugins
            .iter()
            .any(|p| p.has(Hooks::RESPONSE) && p.applies_to(endpoint))
    }

    fn selected<'a>(
        &'a self,
        endpoint: &'a str,
        hook: Hooks,
    ) -> impl Iterator<Item = &'a Arc<Plugin>> + 'a {
        self.plugins
            .iter()
            .filter(move |p| p.has(hook) && p.applies_to(endpoint))
    }

    /// Runs the request hooks; on success `req` holds the request to forward.
    pub async fn on_request(&self, id: u64, req: &mut impl Patchable) -> Result<(), ChainError> {
        let endpoint = req.view().endpoint.clone();
        for p in self.selected(&endpoint, Hooks::REQUEST) {
            if p.phase() != Phase::Mutate {
                continue;
            }
            let verdict = p.invoke(id, Hook::Request(req.view())).await;
            if let Some(denial) = self.settle(id, p, verdict, |patch| req.apply(patch))? {
                return Err(denied(vec![denial]));
            }
        }
        let mut denials = Vec::new();
        for p in self.selected(&endpoint, Hooks::REQUEST) {
            if p.phase() != Phase::Validate {
                continue;
            }
            let verdict = p.invoke(id, Hook::Request(req.view())).await;
            let no_patches = |_: &types::Patch| Err("validating plugins cannot patch".to_string());
            if let Some(denial) = self.settle(id, p, verdict, no_patches)? {
                denials.push(denial);
            }
        }
        if denials.is_empty() {
            Ok(())
        } else {
            Err(denied(denials))
        }
    }

    /// Runs the response hooks in order; each may patch `resp` (through `apply`).
    pub async fn on_response(
        &self,
        id: u64,
        req: &types::Request,
        resp: &mut types::Response,
        mut apply: impl FnMut(&mut types::Response, &types::Patch) -> Result<(), String>,
    ) -> Result<(), ChainError> {
        for p in self.selected(&req.endpoint, Hooks::RESPONSE) {
            let verdict = p.invoke(id, Hook::Response(req, resp)).await;
            if let Some(denial) = self.settle(id, p, verdict, |patch| apply(resp, patch))? {
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
        apply: impl FnOnce(&types::Patch) -> Result<(), String>,
    ) -> Result<Option<(StatusCode, String, String)>, ChainError> {
        let name = p.name();
        let audit_only = p.mode() == Mode::Audit;
        let failure = match verdict {
            Ok(Verdict::Allow) => return Ok(None),
            Ok(Verdict::Deny(d)) => {
                let status = StatusCode::from_u16(d.status)
                    .ok()
                    .filter(|s| s.is_client_error() || s.is_server_error())
                    .unwrap_or(StatusCode::FORBIDDEN);
                if audit_only {
                    info!(id, plugin = name, message = %d.message, "would deny (audit mode)");
                    return Ok(None);
                }
                return Ok(Some((status, name.to_owned(), d.message)));
            }
            Ok(Verdict::Patch(patch)) => {
                if audit_only {
                    info!(id, plugin = name, "would patch (audit mode)");
                    return Ok(None);
                }
                match apply(&patch) {
                    Ok(()) => return Ok(None),
                    Err(why) => PluginFailure::Malformed(why),
                }
            }
            Err(failure) => failure,
        };
        if p.config().fail_open || audit_only {
            warn!(id, plugin = name, error = %failure, "plugin failed; letting the request through (fail_open)");
            return Ok(None);
        }
        warn!(id, plugin = name, error = %failure, "plugin failed; denying (fail-closed)");
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
