//! The endpoint table: every route of dockerd's API router that portcullis knows, in the order
//! dockerd registers them.
//!
//! Order matters for the same reason it does in dockerd: gorilla/mux tries routes in
//! registration order and the first route whose method and path pattern match wins. dockerd
//! registers its routers as checkpoint, container, image, system, volume, build, session,
//! swarm, plugin, distribution, network, grpc (`cmd/dockerd/daemon.go`, "we need to add the
//! checkpoint router before the container router or the DELETE gets masked"), and this table
//! keeps that order, each router's routes in its own order.
//!
//! Path patterns are dockerd's, written the way its router writes them: `{id}` is one path
//! segment (`[^/]+`), `{id:.*}` is any run of characters including `/` (possibly empty) and
//! `{id:.+}` the same but non-empty. Most container, exec, image, network, volume, plugin and
//! distribution parameters are `.*` in dockerd even where the spec writes `{id}`: an image
//! reference (`registry:5000/team/app`) or a legacy link name (`web/db`) spans segments. The
//! swarm objects (services, nodes, tasks, secrets, configs) are single segments. Parameter
//! *names* follow the Engine API spec (`id` for containers, `name` for images) rather than
//! dockerd's Go variable names, so policies read the names they see in the docs.
//!
//! Endpoint names come from the spec's `operationId`, split into lowercase dotted words
//! (`ContainerAttachWebsocket` → `container.attach.websocket`); the few exceptions are where
//! the spec names an HTTP method (`PutContainerArchive` → `container.archive.put`,
//! `SystemPingHead` → `system.ping`) or leads with a verb (`GetPluginPrivileges` →
//! `plugin.privileges`). Routes the spec does not list use the same style.
//!
//! Deliberately absent, so they are denied as unknown endpoints: `OPTIONS /{any}` (CORS
//! preflight), `GET /networks/` (dockerd's duplicate of `/networks`, see the trailing-slash
//! rule in the parent module), the `/debug/...` pprof routes, and routes of old engines that
//! only return errors today (`POST /containers/{id}/copy`).

use http::Method;

use super::{BodyKind, Endpoint};

/// One registered route: a method, a dockerd path pattern (without the `/v{version}` prefix,
/// which dockerd registers for every route alongside the bare path) and what it does.
#[derive(Debug)]
pub(super) struct RouteSpec {
    pub(super) method: Method,
    pub(super) template: &'static str,
    pub(super) endpoint: Endpoint,
}

const fn route(method: Method, template: &'static str, endpoint: Endpoint) -> RouteSpec {
    RouteSpec {
        method,
        template,
        endpoint,
    }
}

/// An endpoint whose request carries no body the engine reads, with a bounded response.
const fn plain(name: &'static str) -> Endpoint {
    Endpoint {
        name,
        body: BodyKind::None,
        hijack: false,
        streaming: false,
    }
}

/// An endpoint whose request body is a JSON document the engine decodes.
const fn json(name: &'static str) -> Endpoint {
    Endpoint {
        body: BodyKind::Json,
        ..plain(name)
    }
}

/// An endpoint whose request body is a tar or other binary stream (build context, image
/// tarball, archive), forwarded as it arrives rather than buffered.
const fn upload(name: &'static str) -> Endpoint {
    Endpoint {
        body: BodyKind::Stream,
        ..plain(name)
    }
}

impl Endpoint {
    /// The response is a long-lived or unbounded stream.
    const fn streamed(self) -> Self {
        Endpoint {
            streaming: true,
            ..self
        }
    }

    /// The engine may hijack or upgrade the connection (and then streams both ways).
    const fn hijacked(self) -> Self {
        Endpoint {
            hijack: true,
            streaming: true,
            ..self
        }
    }
}

const GET: Method = Method::GET;
const HEAD: Method = Method::HEAD;
const POST: Method = Method::POST;
const PUT: Method = Method::PUT;
const DELETE: Method = Method::DELETE;

/// Every known route, in dockerd's registration order (first match wins).
pub(super) static ROUTES: &[RouteSpec] = &[
    // --- checkpoint router (experimental in dockerd, but always registered: it must come
    // before the container router, or `DELETE /containers/{id}/checkpoints/{checkpoint}`
    // would be read as deleting the container "{id}/checkpoints/{checkpoint}").
    route(
        GET,
        "/containers/{id:.*}/checkpoints",
        plain("container.checkpoint.list"),
    ),
    route(
        POST,
        "/containers/{id:.*}/checkpoints",
        json("container.checkpoint.create"),
    ),
    route(
        DELETE,
        "/containers/{id}/checkpoints/{checkpoint}",
        plain("container.checkpoint.delete"),
    ),
    // --- container router
    route(
        HEAD,
        "/containers/{id:.*}/archive",
        plain("container.archive.head"),
    ),
    route(GET, "/containers/json", plain("container.list")),
    route(
        GET,
        "/containers/{id:.*}/export",
        plain("container.export").streamed(),
    ),
    route(
        GET,
        "/containers/{id:.*}/changes",
        plain("container.changes"),
    ),
    route(GET, "/containers/{id:.*}/json", plain("container.inspect")),
    route(GET, "/containers/{id:.*}/top", plain("container.top")),
    route(
        GET,
        "/containers/{id:.*}/logs",
        plain("container.logs").streamed(),
    ),
    route(
        GET,
        "/containers/{id:.*}/stats",
        plain("container.stats").streamed(),
    ),
    route(
        GET,
        "/containers/{id:.*}/attach/ws",
        plain("container.attach.websocket").hijacked(),
    ),
    route(GET, "/exec/{id:.*}/json", plain("exec.inspect")),
    route(
        GET,
        "/containers/{id:.*}/archive",
        plain("container.archive.get").streamed(),
    ),
    route(POST, "/containers/create", json("container.create")),
    route(POST, "/containers/{id:.*}/kill", plain("container.kill")),
    route(POST, "/containers/{id:.*}/pause", plain("container.pause")),
    route(
        POST,
        "/containers/{id:.*}/unpause",
        plain("container.unpause"),
    ),
    route(
        POST,
        "/containers/{id:.*}/restart",
        plain("container.restart"),
    ),
    // Json, not None: engines serving API < 1.24 (20.10 serves down to 1.12) still apply a
    // HostConfig sent in the start body, so policies must get to see it.
    route(POST, "/containers/{id:.*}/start", json("container.start")),
    route(POST, "/containers/{id:.*}/stop", plain("container.stop")),
    route(
        POST,
        "/containers/{id:.*}/wait",
        plain("container.wait").streamed(),
    ),
    route(
        POST,
        "/containers/{id:.*}/resize",
        plain("container.resize"),
    ),
    route(
        POST,
        "/containers/{id:.*}/attach",
        plain("container.attach").hijacked(),
    ),
    route(POST, "/containers/{id:.*}/exec", json("container.exec")),
    route(POST, "/exec/{id:.*}/start", json("exec.start").hijacked()),
    route(POST, "/exec/{id:.*}/resize", plain("exec.resize")),
    route(
        POST,
        "/containers/{id:.*}/rename",
        plain("container.rename"),
    ),
    route(POST, "/containers/{id:.*}/update", json("container.update")),
    route(POST, "/containers/prune", plain("container.prune")),
    // dockerd registers /commit in the container router (and, on older engines, again in the
    // image router, where it is shadowed); the spec calls it ImageCommit.
    route(POST, "/commit", json("image.commit")),
    route(
        PUT,
        "/containers/{id:.*}/archive",
        upload("container.archive.put"),
    ),
    route(DELETE, "/containers/{id:.*}", plain("container.delete")),
    // --- image router
    route(GET, "/images/json", plain("image.list")),
    route(GET, "/images/search", plain("image.search")),
    route(GET, "/images/get", plain("image.get.all").streamed()),
    route(GET, "/images/{name:.*}/get", plain("image.get").streamed()),
    route(GET, "/images/{name:.*}/history", plain("image.history")),
    route(GET, "/images/{name:.*}/json", plain("image.inspect")),
    route(
        GET,
        "/images/{name:.*}/attestations",
        plain("image.attestations"),
    ),
    route(POST, "/images/load", upload("image.load").streamed()),
    // The body is the image tarball when importing (`fromSrc=-`), empty when pulling; the
    // response is a progress stream either way.
    route(POST, "/images/create", upload("image.create").streamed()),
    route(
        POST,
        "/images/{name:.*}/push",
        plain("image.push").streamed(),
    ),
    route(POST, "/images/{name:.*}/tag", plain("image.tag")),
    route(POST, "/images/prune", plain("image.prune")),
    route(DELETE, "/images/{name:.*}", plain("image.delete")),
    // --- system router
    route(GET, "/_ping", plain("system.ping")),
    route(HEAD, "/_ping", plain("system.ping")),
    route(GET, "/events", plain("system.events").streamed()),
    route(GET, "/info", plain("system.info")),
    route(GET, "/version", plain("system.version")),
    route(GET, "/system/df", plain("system.data.usage")),
    route(POST, "/auth", json("system.auth")),
    // --- volume router
    route(GET, "/volumes", plain("volume.list")),
    route(GET, "/volumes/{name:.*}", plain("volume.inspect")),
    route(POST, "/volumes/create", json("volume.create")),
    route(POST, "/volumes/prune", plain("volume.prune")),
    route(PUT, "/volumes/{name:.*}", json("volume.update")),
    route(DELETE, "/volumes/{name:.*}", plain("volume.delete")),
    // --- build router
    route(POST, "/build", upload("image.build").streamed()),
    route(POST, "/build/prune", plain("build.prune")),
    route(POST, "/build/cancel", plain("build.cancel")),
    // --- session router (BuildKit session, upgraded to h2c)
    route(POST, "/session", plain("session").hijacked()),
    // --- swarm router
    route(POST, "/swarm/init", json("swarm.init")),
    route(POST, "/swarm/join", json("swarm.join")),
    route(POST, "/swarm/leave", plain("swarm.leave")),
    route(GET, "/swarm", plain("swarm.inspect")),
    route(GET, "/swarm/unlockkey", plain("swarm.unlockkey")),
    route(POST, "/swarm/update", json("swarm.update")),
    route(POST, "/swarm/unlock", json("swarm.unlock")),
    route(GET, "/services", plain("service.list")),
    route(GET, "/services/{id}", plain("service.inspect")),
    route(POST, "/services/create", json("service.create")),
    route(POST, "/services/{id}/update", json("service.update")),
    route(DELETE, "/services/{id}", plain("service.delete")),
    route(GET, "/services/{id}/logs", plain("service.logs").streamed()),
    route(GET, "/nodes", plain("node.list")),
    route(GET, "/nodes/{id}", plain("node.inspect")),
    route(DELETE, "/nodes/{id}", plain("node.delete")),
    route(POST, "/nodes/{id}/update", json("node.update")),
    route(GET, "/tasks", plain("task.list")),
    route(GET, "/tasks/{id}", plain("task.inspect")),
    route(GET, "/tasks/{id}/logs", plain("task.logs").streamed()),
    route(GET, "/secrets", plain("secret.list")),
    route(POST, "/secrets/create", json("secret.create")),
    route(DELETE, "/secrets/{id}", plain("secret.delete")),
    route(GET, "/secrets/{id}", plain("secret.inspect")),
    route(POST, "/secrets/{id}/update", json("secret.update")),
    route(GET, "/configs", plain("config.list")),
    route(POST, "/configs/create", json("config.create")),
    route(DELETE, "/configs/{id}", plain("config.delete")),
    route(GET, "/configs/{id}", plain("config.inspect")),
    route(POST, "/configs/{id}/update", json("config.update")),
    // --- plugin router
    route(GET, "/plugins", plain("plugin.list")),
    route(GET, "/plugins/{name:.*}/json", plain("plugin.inspect")),
    route(GET, "/plugins/privileges", plain("plugin.privileges")),
    route(DELETE, "/plugins/{name:.*}", plain("plugin.delete")),
    route(POST, "/plugins/{name:.*}/enable", plain("plugin.enable")),
    route(POST, "/plugins/{name:.*}/disable", plain("plugin.disable")),
    // pull and upgrade take the accepted privileges as a JSON array.
    route(POST, "/plugins/pull", json("plugin.pull").streamed()),
    route(
        POST,
        "/plugins/{name:.*}/push",
        plain("plugin.push").streamed(),
    ),
    route(
        POST,
        "/plugins/{name:.*}/upgrade",
        json("plugin.upgrade").streamed(),
    ),
    route(POST, "/plugins/{name:.*}/set", json("plugin.set")),
    route(POST, "/plugins/create", upload("plugin.create")),
    // --- distribution router
    route(
        GET,
        "/distribution/{name:.*}/json",
        plain("distribution.inspect"),
    ),
    // --- network router
    route(GET, "/networks", plain("network.list")),
    route(GET, "/networks/{id:.+}", plain("network.inspect")),
    route(POST, "/networks/create", json("network.create")),
    route(POST, "/networks/{id:.*}/connect", json("network.connect")),
    route(
        POST,
        "/networks/{id:.*}/disconnect",
        json("network.disconnect"),
    ),
    route(POST, "/networks/prune", plain("network.prune")),
    route(DELETE, "/networks/{id:.*}", plain("network.delete")),
    // --- grpc router (BuildKit's control API, upgraded to h2c)
    route(POST, "/grpc", plain("grpc").hijacked()),
];
