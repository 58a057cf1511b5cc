"""{{name}}: a portcullis plugin.

Denies containers that are privileged or that lack the labels the configuration requires.
Configuration (the plugin's `config` table in the gateway configuration):

    required_labels = ["com.example.owner"]

Build: ./build.sh (componentize-py) -> {{name}}.wasm. Test: ./test.sh.
"""

from portcullis_plugin import Plugin, Request, allow, deny, export, log


class MyPlugin(Plugin):
    name = "{{name}}"
    version = "0.1.0"

    def __init__(self, config):
        # Raise ValueError to refuse a configuration: the gateway then does not start.
        unknown = set(config) - {"required_labels"}
        if unknown:
            raise ValueError(f"{self.name}: unknown key {sorted(unknown)[0]}")
        labels = config.get("required_labels", [])
        if not isinstance(labels, list) or not all(isinstance(l, str) for l in labels):
            raise ValueError(f"{self.name}: required_labels: expected a list of strings")
        self.required_labels = labels

    # Only the hooks overridden here are called by the gateway.
    def on_request(self, req: Request):
        create = req.container_create()
        if create is None:
            return allow()
        if create.privileged:
            return deny("privileged containers are not allowed")
        for label in self.required_labels:
            if label not in create.labels:
                log.info(f"{req.caller.user} created a container without {label}")
                return deny(f"containers must have the label {label}")
        return allow()


# componentize-py exports the class named Policy as portcullis:plugin/policy.
Policy = export(MyPlugin)
