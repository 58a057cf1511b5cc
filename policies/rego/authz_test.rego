package docker.authz

import rego.v1

test_plain_create_allowed if {
	allow with input as {"Method": "POST", "User": "alice", "Body": {"Image": "busybox"}, "BindMounts": []}
}

test_privileged_denied if {
	not allow with input as {"Method": "POST", "User": "alice", "Body": {"HostConfig": {"Privileged": true}}, "BindMounts": []}
}

test_host_network_denied if {
	not allow with input as {"Method": "POST", "User": "alice", "Body": {"HostConfig": {"NetworkMode": "host"}}, "BindMounts": []}
}

test_docker_socket_bind_denied if {
	not allow with input as {"Method": "POST", "User": "alice", "BindMounts": [{"Source": "/run/docker.sock", "Resolved": "/run/docker.sock", "ReadOnly": true}]}
}

test_read_only_user_may_list if {
	allow with input as {"Method": "GET", "User": "auditor", "BindMounts": []} with data.config as {"read_only_users": ["auditor"]}
}

test_read_only_user_may_not_create if {
	not allow with input as {"Method": "POST", "User": "auditor", "BindMounts": []} with data.config as {"read_only_users": ["auditor"]}
}
