# An opa-docker-authz style policy: the decision is data.docker.authz.allow, the input has
# opa-docker-authz's fields (Method, Path, PathPlain, PathArr, Query, Headers, Body, User,
# AuthMethod, BindMounts) plus portcullis's (Endpoint, Caller, Target, ...).
#
# Policies written for opa-docker-authz run unchanged; Rego v0 syntax (rules without `if`)
# is accepted too. Test with: portcullis policy test policies/rego
package docker.authz

import rego.v1

default allow := false

# Read-only users may only look.
read_only_users := {u | some u in object.get(data.config, "read_only_users", [])}

allow if {
	not deny
	not read_only_violation
}

read_only_violation if {
	input.User in read_only_users
	not input.Method in {"GET", "HEAD"}
}

# No privileged containers, no host network, no binds of the Docker socket.
deny if input.Body.HostConfig.Privileged == true

deny if input.Body.HostConfig.NetworkMode == "host"

deny if {
	some mount in input.BindMounts
	startswith(mount.Resolved, "/var/run/docker.sock")
}

deny if {
	some mount in input.BindMounts
	startswith(mount.Resolved, "/run/docker.sock")
}
