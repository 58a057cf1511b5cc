//! The method table: every gRPC method a mediated BuildKit tunnel carries, and what the
//! gateway does with it. A method not in the table is refused (docs/builds.md has the
//! same table for operators).

/// What the gateway does with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// A build: decoded, judged by the plugin chain like `image.build`, its tags claimed,
    /// its session and ref checked, and re-encoded from what was judged.
    Solve,
    /// The frontend request of a build the client drives itself (buildx's way: the Solve
    /// names no frontend, the client then asks for the Dockerfile frontend through the
    /// LLB bridge with the build's options): judged as `build.solve` too, for the build the
    /// call names (`buildkit-controlapi-buildid`), which must be the caller's.
    FrontendSolve,
    /// The rest of a client-driven build's bridge (reading files of its results, resolving
    /// image configs, returning the result): only for the caller's own build.
    Bridge,
    /// Reads of one build (status, history updates): only its starter's.
    OwnRef(RefCall),
    /// The build history stream: the caller's own builds only.
    History,
    /// Judged by the plugin chain (prune, disk usage, info, workers), re-encoded.
    Judged(Judged),
    /// Refused whatever the policy, with the reason.
    Refused(&'static str),
    /// The engine calling the caller's own session (its files, secrets, credentials, SSH
    /// agent): nothing a plugin could judge, passed on and recorded.
    SessionService,
    /// The engine's health checks of a session: passed on, not recorded.
    Health,
}

impl Rule {
    /// Whether the engine acts on the call (a build, a prune, a history edit): such a call
    /// is on the record before it is forwarded.
    pub fn acts(self) -> bool {
        matches!(
            self,
            Rule::Solve
                | Rule::FrontendSolve
                | Rule::Judged(Judged::Prune)
                | Rule::OwnRef(RefCall::UpdateHistory)
        )
    }
}

/// A read or change of one build, by its ref.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefCall {
    Status,
    UpdateHistory,
}

/// Calls the plugin chain judges by their request alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judged {
    Prune,
    DiskUsage,
    Info,
    ListWorkers,
}

/// A call on a tunnel: its plugin-facing endpoint name and rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Method {
    pub endpoint: &'static str,
    pub rule: Rule,
}

const CONTROL: &str = "/moby.buildkit.v1.Control/";
const BRIDGE: &str = "/moby.buildkit.v1.frontend.LLBBridge/";

/// The bridge calls of a client-driven build that only read or return its own results.
const BRIDGE_CALLS: [&str; 10] = [
    "Ping",
    "Inputs",
    "ResolveImageConfig",
    "ResolveSourceMeta",
    "ReadFile",
    "ReadDir",
    "StatFile",
    "Evaluate",
    "Warn",
    "Return",
];

/// The client's calls on `/grpc` (BuildKit's control API).
pub fn control(path: &str) -> Option<Method> {
    let m = |endpoint, rule| Some(Method { endpoint, rule });
    if let Some(call) = path.strip_prefix(BRIDGE) {
        return match call {
            "Solve" => m("build.solve", Rule::FrontendSolve),
            "NewContainer" | "ReleaseContainer" | "ExecProcess" => m(
                "build.container",
                Rule::Refused(
                    "interactive build containers (buildx debug) are not mediated by the gateway",
                ),
            ),
            c if BRIDGE_CALLS.contains(&c) => m("build.frontend", Rule::Bridge),
            _ => None,
        };
    }
    match path.strip_prefix(CONTROL)? {
        "Solve" => m("build.solve", Rule::Solve),
        "Status" => m("build.status", Rule::OwnRef(RefCall::Status)),
        "ListenBuildHistory" => m("build.history", Rule::History),
        "UpdateBuildHistory" => m("build.history.update", Rule::OwnRef(RefCall::UpdateHistory)),
        // The same name as the classic `POST /build/prune`: one rule covers both.
        "Prune" => m("build.prune", Rule::Judged(Judged::Prune)),
        "DiskUsage" => m("build.du", Rule::Judged(Judged::DiskUsage)),
        "Info" => m("build.info", Rule::Judged(Judged::Info)),
        "ListWorkers" => m("build.workers", Rule::Judged(Judged::ListWorkers)),
        // A session tunnelled inside a gRPC stream bypasses `/session`, where the gateway
        // records whose session an id is.
        "Session" => m(
            "build.session",
            Rule::Refused(
                "sessions are opened with POST /session, where the gateway records whose they are",
            ),
        ),
        _ => None,
    }
}

/// Services the engine calls on the client's side of `/session`.
const SESSION_SERVICES: [&str; 7] = [
    "/moby.filesync.v1.FileSync/",
    "/moby.filesync.v1.FileSend/",
    "/moby.filesync.v1.Auth/",
    "/moby.buildkit.secrets.v1.Secrets/",
    "/moby.sshforward.v1.SSH/",
    "/moby.upload.v1.Upload/",
    "/moby.exporter.v1.Exporter/",
];

/// The engine's calls on `/session` (the client's session services).
pub fn session(path: &str) -> Option<Method> {
    if path.starts_with("/grpc.health.v1.Health/") {
        return Some(Method {
            endpoint: "build.session.health",
            rule: Rule::Health,
        });
    }
    SESSION_SERVICES
        .iter()
        .any(|s| path.starts_with(s))
        .then_some(Method {
            endpoint: "build.session.call",
            rule: Rule::SessionService,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_control_method_has_a_rule() {
        for (name, endpoint) in [
            ("Solve", "build.solve"),
            ("Status", "build.status"),
            ("ListenBuildHistory", "build.history"),
            ("UpdateBuildHistory", "build.history.update"),
            ("Prune", "build.prune"),
            ("DiskUsage", "build.du"),
            ("Info", "build.info"),
            ("ListWorkers", "build.workers"),
            ("Session", "build.session"),
        ] {
            let m = control(&format!("{CONTROL}{name}")).unwrap();
            assert_eq!(m.endpoint, endpoint);
        }
        assert!(matches!(
            control("/moby.buildkit.v1.Control/Session").unwrap().rule,
            Rule::Refused(_)
        ));
        assert_eq!(control("/moby.buildkit.v1.Control/Other"), None);
        let bridge = |c: &str| control(&format!("{BRIDGE}{c}")).map(|m| m.rule);
        assert_eq!(bridge("Solve"), Some(Rule::FrontendSolve));
        assert_eq!(bridge("ReadFile"), Some(Rule::Bridge));
        assert!(matches!(bridge("NewContainer"), Some(Rule::Refused(_))));
        assert_eq!(bridge("Frobnicate"), None);
    }

    #[test]
    fn session_calls_are_the_session_services() {
        assert_eq!(
            session("/moby.filesync.v1.FileSync/DiffCopy").unwrap().rule,
            Rule::SessionService
        );
        assert_eq!(
            session("/grpc.health.v1.Health/Check").unwrap().rule,
            Rule::Health
        );
        assert_eq!(session("/moby.buildkit.v1.Control/Solve"), None);
    }
}
