//! Contract `portcullis:plugin@0.2.0` (`sdk/wit/0.2.0/`): the generated bindings, the `host`
//! import, and the conversions between the generated types and [`crate::model`].

use wasmtime::component::{HasSelf, Linker};
use wasmtime::Store;

use crate::model;
use crate::plugin::sandbox::State;
use crate::plugin::Hook;

mod generated {
    wasmtime::component::bindgen!({
        path: "../sdk/wit/0.2.0",
        world: "plugin",
        imports: { default: trappable },
        exports: { default: async },
    });
}

use generated::portcullis::plugin::{host, types};
pub use generated::{Plugin, PluginPre};

/// The contract version, as it appears in export names.
pub const VERSION: &str = "0.2.0";
/// The interface a plugin must export.
pub const POLICY_INTERFACE: &str = "portcullis:plugin/policy";

/// Adds the `host` interface to `linker`.
pub fn add_to_linker(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    host::add_to_linker::<State, HasSelf<State>>(linker, |s| s)
}

/// Calls `describe`.
pub async fn describe(
    instance: &Plugin,
    store: &mut Store<State>,
) -> wasmtime::Result<model::Info> {
    let info = instance
        .portcullis_plugin_policy()
        .call_describe(store)
        .await?;
    Ok(info.into())
}

/// Calls `init` with the plugin's configuration (JSON text).
pub async fn init(
    instance: &Plugin,
    store: &mut Store<State>,
    config: &str,
) -> wasmtime::Result<Result<(), String>> {
    instance
        .portcullis_plugin_policy()
        .call_init(store, config)
        .await
}

/// Calls `hook` on an initialized instance.
pub async fn call_hook(
    instance: &Plugin,
    store: &mut Store<State>,
    hook: &Hook<'_>,
) -> wasmtime::Result<model::Verdict> {
    let policy = instance.portcullis_plugin_policy();
    let verdict = match *hook {
        Hook::Request(r) => policy.call_on_request(store, &r.into()).await?,
        Hook::Response(r, resp) => {
            policy
                .call_on_response(store, &r.into(), &resp.into())
                .await?
        }
        Hook::Audit(r, rec) => policy.call_on_audit(store, &r.into(), rec).await?,
    };
    Ok(verdict.into())
}

impl host::Host for State {
    fn log(&mut self, level: host::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            host::Level::Trace => model::Level::Trace,
            host::Level::Debug => model::Level::Debug,
            host::Level::Info => model::Level::Info,
            host::Level::Warn => model::Level::Warn,
            host::Level::Error => model::Level::Error,
        };
        State::log(self, level, message);
        Ok(())
    }
}

impl From<&model::Pair> for types::Pair {
    fn from(p: &model::Pair) -> Self {
        Self {
            name: p.name.clone(),
            value: p.value.clone(),
        }
    }
}

impl From<types::Pair> for model::Pair {
    fn from(p: types::Pair) -> Self {
        Self {
            name: p.name,
            value: p.value,
        }
    }
}

fn pairs(v: &[model::Pair]) -> Vec<types::Pair> {
    v.iter().map(Into::into).collect()
}

impl From<model::AuthMethod> for types::AuthMethod {
    fn from(a: model::AuthMethod) -> Self {
        match a {
            model::AuthMethod::None => Self::None,
            model::AuthMethod::PeerCredentials => Self::PeerCredentials,
            model::AuthMethod::MutualTls => Self::MutualTls,
            model::AuthMethod::Token => Self::Token,
        }
    }
}

impl From<&model::Caller> for types::Caller {
    fn from(c: &model::Caller) -> Self {
        Self {
            user: c.user.clone(),
            groups: c.groups.clone(),
            auth: c.auth.into(),
            peer: c.peer.clone(),
        }
    }
}

impl From<&model::Target> for types::Target {
    fn from(t: &model::Target) -> Self {
        Self {
            kind: t.kind.clone(),
            id: t.id.clone(),
            name: t.name.clone(),
            labels: pairs(&t.labels),
            owner: t.owner.clone(),
        }
    }
}

impl From<&model::Reference> for types::Reference {
    fn from(r: &model::Reference) -> Self {
        Self {
            field: r.field.clone(),
            kind: r.kind.clone(),
            name: r.name.clone(),
            object: r.object.as_ref().map(Into::into),
        }
    }
}

impl From<&model::Request> for types::Request {
    fn from(r: &model::Request) -> Self {
        Self {
            id: r.id,
            method: r.method.clone(),
            path: r.path.clone(),
            api_version: r.api_version.clone(),
            endpoint: r.endpoint.clone(),
            object_id: r.object_id.clone(),
            query: pairs(&r.query),
            headers: pairs(&r.headers),
            body: r.body.clone(),
            caller: (&r.caller).into(),
            target: r.target.as_ref().map(Into::into),
            related: r.related.iter().map(Into::into).collect(),
        }
    }
}

impl From<&model::Response> for types::Response {
    fn from(r: &model::Response) -> Self {
        Self {
            status: r.status,
            headers: pairs(&r.headers),
            body: r.body.clone(),
        }
    }
}

impl From<types::Edit> for model::Edit {
    fn from(e: types::Edit) -> Self {
        match e {
            types::Edit::Set(p) => Self::Set(p.into()),
            types::Edit::Remove(name) => Self::Remove(name),
        }
    }
}

impl From<types::Patch> for model::Patch {
    fn from(p: types::Patch) -> Self {
        Self {
            body: p.body,
            headers: p.headers.into_iter().map(Into::into).collect(),
            query: p.query.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<types::Verdict> for model::Verdict {
    fn from(v: types::Verdict) -> Self {
        match v {
            types::Verdict::Allow => Self::Allow,
            types::Verdict::Deny(d) => Self::Deny(model::Denial {
                status: d.status,
                message: d.message,
            }),
            types::Verdict::Patch(p) => Self::Patch(p.into()),
        }
    }
}

impl From<types::Hooks> for model::Hooks {
    fn from(h: types::Hooks) -> Self {
        let mut out = Self::empty();
        out.set(Self::REQUEST, h.contains(types::Hooks::REQUEST));
        out.set(Self::RESPONSE, h.contains(types::Hooks::RESPONSE));
        out.set(Self::AUDIT, h.contains(types::Hooks::AUDIT));
        out
    }
}

impl From<types::Info> for model::Info {
    fn from(i: types::Info) -> Self {
        Self {
            name: i.name,
            version: i.version,
            hooks: i.hooks.into(),
        }
    }
}
