"""The owner policy in Python, one of four identical implementations (Rust, Python, JavaScript,
C) in sdk/examples/owner/, all held to the table in tests/plugin-conformance/owner.json.

On container.create it allows only images from the configured repositories and requires an
owner label. Configuration: repositories (required list), owner_label (default
com.example.owner).
"""

import re

from portcullis_plugin import Plugin, Request, allow, deny, export, log

DEFAULT_LABEL = "com.example.owner"
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def is_image_id(image: str) -> bool:
    """Whether the image is named by id (sha256:... or 64 hex digits), not by repository."""
    return image.startswith("sha256:") or _HEX64.fullmatch(image) is not None


def repository(image: str) -> str:
    """The repository of an image reference, normalized as Docker does (no tag or digest,
    docker.io and library/ filled in): busybox:1.36 -> docker.io/library/busybox."""
    name = image.split("@", 1)[0]
    colon = name.rfind(":")
    if colon >= 0 and "/" not in name[colon:]:
        name = name[:colon]
    if "/" not in name:
        return "docker.io/library/" + name
    first, rest = name.split("/", 1)
    if "." in first or ":" in first or first == "localhost":
        if first == "docker.io" and "/" not in rest:
            return "docker.io/library/" + rest
        return name
    return "docker.io/" + name


class Owner(Plugin):
    name = "owner-policy"
    version = "0.1.0"

    def __init__(self, config):
        if not isinstance(config, dict):
            raise ValueError("the configuration must be a table")
        for key in config:
            if key not in ("repositories", "owner_label"):
                raise ValueError(f"unknown key {key} (expected repositories, owner_label)")
        repos = config.get("repositories")
        if not isinstance(repos, list) or not repos or not all(isinstance(r, str) and r for r in repos):
            raise ValueError("repositories: expected a non-empty list of image repositories")
        label = config.get("owner_label", DEFAULT_LABEL)
        if not isinstance(label, str) or not label:
            raise ValueError("owner_label: expected a non-empty string")
        self.allowed = repos
        self.normalized = {repository(r) for r in repos}
        self.label = label

    def on_request(self, req: Request):
        if req.endpoint != "container.create":
            return allow()
        body = req.json_body()
        if not isinstance(body, dict):
            return deny("container.create: the request body is not a JSON object", status=400)
        image = body.get("Image")
        if not isinstance(image, str) or not image:
            return deny("containers must name an image")
        if is_image_id(image):
            return deny(f"image {image} must be named by repository, not by id")
        if repository(image) not in self.normalized:
            return deny(f"image {image} is not from an allowed repository (allowed: {', '.join(self.allowed)})")
        labels = body.get("Labels")
        owner = labels.get(self.label) if isinstance(labels, dict) else None
        if not isinstance(owner, str) or not owner:
            log.info(f"{req.caller.user} created a container without {self.label}")
            return deny(f"containers must carry the label {self.label} (docker create --label {self.label}=NAME)")
        return allow()


Policy = export(Owner)
