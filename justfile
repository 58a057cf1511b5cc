# portcullis developer and user commands. `just --list` shows them.
#
# Everything runs against a private Docker engine (scripts/dev-engine) on its own
# socket, never the system's /var/run/docker.sock; `just test` also runs the
# engine-facing suites against a private dockerd 26 and a private Podman service
# (docs/engines.md).

set shell := ["bash", "-euo", "pipefail", "-c"]
set positional-arguments

# One warm target dir shared by builds, tests and CI (a release wasmtime takes minutes).
export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", "/var/cache/portcullis/target")
export CARGO_BUILD_JOBS := env_var_or_default("CARGO_BUILD_JOBS", "2")

engine_dir := env_var_or_default("PORTCULLIS_ENGINE_DIR", "/var/tmp/portcullis-engine")
engine := "unix://" + engine_dir / "docker.sock"
listen_dir := env_var_or_default("PORTCULLIS_LISTEN_DIR", "/var/tmp/portcullis")
listen := "unix://" + listen_dir / "portcullis.sock"
config := env_var_or_default("PORTCULLIS_CONFIG", "policies/portcullis.toml")
podman_dir := env_var_or_default("PORTCULLIS_PODMAN_DIR", "/var/tmp/portcullis-podman")
podman := "unix://" + podman_dir / "podman.sock"
# The suites that run against Podman too (docs/engines.md): the core CLI scenarios and the
# libpod refusal, the shipped policy (baseline, labels, tenancy), the audit trail, image
# tags and who owns them, compose (tests/tools.rs skips its swarm test on Podman), and the
# host-escape attempts of adversarial.rs.
podman_tests := "--test core --test policies --test audit --test images --test tools --test adversarial"
dockerd26_dir := env_var_or_default("PORTCULLIS_DOCKERD26_DIR", "/var/tmp/portcullis-dockerd26")
dockerd26 := "unix://" + dockerd26_dir / "docker.sock"
# The suites that run against Debian 13's dockerd 26 (docs/engines.md): Podman's list, and
# the BuildKit tests (tests/buildkit.rs, which the first pass runs against dockerd 20.10 too).
dockerd26_tests := podman_tests + " --test buildkit"

# Show the recipes.
[private]
default:
    @just --list

# Install what is missing (Debian packages, Debian 13's Docker clients and dockerd 26, the wasm target) and start the dev engine.
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
    missing=()
    # fonts-dejavu-core: the font `just bench` draws its latency plot with; docker-compose:
    # the compose tests (tests/tools.rs, tests/container.rs) run Debian's compose; systemd:
    # `systemd-analyze verify` checks the unit (tests/install.rs); binutils: `strip` for the
    # image (scripts/build-image); podman, runc: the second engine the tests run against
    # (`just test-podman`; runc because Debian's crun refuses hybrid cgroup hierarchies).
    for pkg in docker.io docker-compose busybox-static socat haproxy iproute2 curl fonts-dejavu-core systemd binutils podman runc; do
        dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "setup: installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
        # Keep apt from starting the system's dockerd: the dev engine is the one
        # portcullis uses, and a second engine would own the DOCKER iptables chains.
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
            $sudo chmod +x /usr/sbin/policy-rc.d
            trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
        fi
        $sudo apt-get update -qq
        $sudo apt-get install -y -qq "${missing[@]}"
    fi
    # Debian 13's docker-buildx, docker-compose v2 (CLI plugins) and dockerd 26, unpacked
    # beside Debian 12's packages, never over them (scripts/install-trixie; docs/engines.md).
    scripts/install-trixie --check || $sudo scripts/install-trixie
    if ! rustup target list --installed | grep -qx wasm32-wasip2; then
        rustup target add wasm32-wasip2
    fi
    scripts/dev-engine start

# Start the dev engine (a no-op if it runs); prints its DOCKER_HOST.
engine:
    scripts/dev-engine start

# Stop the dev engine and wipe its state (`just engine-stop --keep` keeps it).
engine-stop *args:
    scripts/dev-engine stop "$@"

# Start the Podman dev engine (a no-op if it runs); prints its DOCKER_HOST.
engine-podman:
    PORTCULLIS_ENGINE=podman PORTCULLIS_ENGINE_DIR={{podman_dir}} scripts/dev-engine start

# Stop the Podman dev engine and wipe its state (`--keep` keeps it).
engine-podman-stop *args:
    PORTCULLIS_ENGINE=podman PORTCULLIS_ENGINE_DIR={{podman_dir}} scripts/dev-engine stop "$@"

# Start the dockerd 26 dev engine (Debian 13's, a no-op if it runs); prints its DOCKER_HOST.
engine-26:
    PORTCULLIS_ENGINE=dockerd26 PORTCULLIS_ENGINE_DIR={{dockerd26_dir}} scripts/dev-engine start

# Stop the dockerd 26 dev engine and wipe its state (`--keep` keeps it).
engine-26-stop *args:
    PORTCULLIS_ENGINE=dockerd26 PORTCULLIS_ENGINE_DIR={{dockerd26_dir}} scripts/dev-engine stop "$@"

# Build the gateway binary (release).
build:
    cargo build --release -p portcullis

# Build every plugin crate (plugins/*/ and the test plugins in tests/plugins/*/) to wasm32-wasip2 components.
plugins:
    #!/usr/bin/env bash
    set -euo pipefail
    shopt -s nullglob
    rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
    pkgs=()
    for manifest in plugins/*/Cargo.toml tests/plugins/*/Cargo.toml; do
        pkgs+=(-p "$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$manifest" | head -n 1)")
    done
    if [ "${#pkgs[@]}" -eq 0 ]; then
        echo "plugins: no plugin crates yet; nothing to build"
        exit 0
    fi
    cargo build --release --target wasm32-wasip2 "${pkgs[@]}"
    echo "plugins: components are in $CARGO_TARGET_DIR/wasm32-wasip2/release/"
    # First-party plugins go next to the default config too, as policies/plugins/<dir>.wasm,
    # the paths policies/portcullis.toml names.
    mkdir -p policies/plugins
    for manifest in plugins/*/Cargo.toml; do
        dir=$(basename "$(dirname "$manifest")")
        crate=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$manifest" | head -n 1)
        cp "$CARGO_TARGET_DIR/wasm32-wasip2/release/${crate//-/_}.wasm" "policies/plugins/$dir.wasm"
    done

# Into $CARGO_TARGET_DIR/plugin-examples/, installing their toolchains when missing.
# Build the example policy in Rust, Python, JavaScript and C (sdk/examples/owner/).
plugin-examples *langs:
    scripts/build-plugin-examples "$@"

# `scripts/up` installs just when it is missing, then runs this.
# Set up, build, and serve the gateway on /var/tmp/portcullis/portcullis.sock in front of the dev engine.
up: setup build plugins
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p {{listen_dir}}
    # `portcullis ...` for the other shell: linked next to cargo's binaries, which rustup puts
    # on PATH (a portcullis there that is not our link is left alone).
    bin="$CARGO_TARGET_DIR/release/portcullis"
    cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
    if [ -d "$cargo_bin" ] && { [ -L "$cargo_bin/portcullis" ] || [ ! -e "$cargo_bin/portcullis" ]; }; then
        ln -sfn "$bin" "$cargo_bin/portcullis"
        echo "portcullis: $cargo_bin/portcullis -> $bin"
    else
        echo "portcullis: the binary is $bin"
    fi
    args=(serve --listen {{listen}} --engine {{engine}})
    if [ -f {{config}} ]; then args+=(--config {{config}}); fi
    echo "portcullis: point your Docker clients at the gateway:"
    echo "export DOCKER_HOST={{listen}}"
    exec "$bin" "${args[@]}"

# DESTDIR and PREFIX are honoured; PORTCULLIS_BIN installs that binary instead of building one.
# An edited /etc/portcullis/portcullis.toml is kept (docs/operating.md, "Install").
# Install (as root, idempotent) the release binary, the plugins, /etc/portcullis and the systemd unit.
install: plugins
    #!/usr/bin/env bash
    set -euo pipefail
    [ -n "${PORTCULLIS_BIN:-}" ] || cargo build --release -p portcullis
    scripts/install

# Against DOCKER_HOST, else the dev engine (docs/operating.md, "Container image").
# Build the container image portcullis:latest from the release binary (args: --tag TAG, --bin FILE).
image *args: plugins
    #!/usr/bin/env bash
    set -euo pipefail
    export DOCKER_HOST="${DOCKER_HOST:-{{engine}}}"
    [[ -n "${PORTCULLIS_BIN:-}" || " $* " == *" --bin "* ]] || cargo build --release -p portcullis
    scripts/build-image "$@"

# Without arguments the dockerd 26 pass (`just test-dockerd26`) and the Podman pass
# (`just test-podman`) follow, whatever the first one gave.
# Run every test against the dev engine (extra arguments go to the test runner).
test *args: setup plugins plugin-examples
    #!/usr/bin/env bash
    set -euo pipefail
    export PORTCULLIS_TEST_ENGINE={{engine}}
    rc=0
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run --no-fail-fast "$@" || rc=$?
    else
        cargo test --no-fail-fast "$@" -- --test-threads 2 || rc=$?
    fi
    if [ $# -eq 0 ]; then
        echo "test: the engine-facing suites again, against dockerd 26"
        "{{just_executable()}}" test-dockerd26 || rc=$?
        echo "test: the engine-facing suites again, against Podman"
        "{{just_executable()}}" test-podman || rc=$?
    fi
    exit "$rc"

# Arguments replace that list (`just test-dockerd26 --test core build`).
# Run the engine-facing suites against Debian 13's dockerd 26 (dockerd26_tests above; docs/engines.md).
test-dockerd26 *args: plugins
    #!/usr/bin/env bash
    set -euo pipefail
    scripts/install-trixie --check || scripts/install-trixie
    PORTCULLIS_ENGINE=dockerd26 PORTCULLIS_ENGINE_DIR={{dockerd26_dir}} scripts/dev-engine start >/dev/null
    export PORTCULLIS_TEST_ENGINE={{dockerd26}}
    if [ $# -eq 0 ]; then set -- {{dockerd26_tests}}; fi
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run --no-fail-fast -p portcullis-tests "$@"
    else
        cargo test --no-fail-fast -p portcullis-tests "$@" -- --test-threads 2
    fi

# Arguments replace that list (`just test-podman --test core libpod`).
# Run the engine-facing suites against a private Podman service (podman_tests above; docs/engines.md).
test-podman *args: plugins
    #!/usr/bin/env bash
    set -euo pipefail
    PORTCULLIS_ENGINE=podman PORTCULLIS_ENGINE_DIR={{podman_dir}} scripts/dev-engine start >/dev/null
    export PORTCULLIS_TEST_ENGINE={{podman}}
    if [ $# -eq 0 ]; then set -- {{podman_tests}}; fi
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run --no-fail-fast -p portcullis-tests "$@"
    else
        cargo test --no-fail-fast -p portcullis-tests "$@" -- --test-threads 2
    fi

# On an engine of its own; PORTCULLIS_DOCKER_PY_SRC: a docker-py checkout. Prints each test as passed, denied by a rule
# or broken.
# docker-py's integration suite, directly and through the shipped policy as a plain user (args: --keep, -k EXPR, -- PYTEST-ARGS).
peer *args: build plugins
    scripts/peer-docker-py "$@"

# Benchmark portcullis against the engine, socat and HAProxy into BENCHMARKS.md (args: --quick, --compare OLD.json, ...).
bench *args:
    #!/usr/bin/env bash
    set -euo pipefail
    scripts/dev-engine start >/dev/null
    cargo build --release -p portcullis
    # Without the plugins the bench still runs; it skips the plugin-chain configuration and says so.
    "{{just_executable()}}" plugins || echo "bench: the plugins did not build; portcullis-3 will be skipped"
    # The Python and JavaScript configurations need the owner policy built with componentize-py
    # and componentize-js; build them when those toolchains are installed (the bench skips the
    # configuration and says so otherwise: scripts/install-plugin-toolchains python js).
    tools=${PORTCULLIS_TOOLS:-/var/cache/portcullis}
    if [ -x "$tools/venv/bin/componentize-py" ]; then
        scripts/build-plugin-examples python || echo "bench: the Python plugin did not build; portcullis-python will be skipped"
    fi
    if [ -f "$tools/npm/node_modules/@bytecodealliance/componentize-js/src/componentize.js" ]; then
        scripts/build-plugin-examples js || echo "bench: the JavaScript plugin did not build; portcullis-js will be skipped"
    fi
    export PORTCULLIS_TEST_ENGINE={{engine}}
    export PORTCULLIS_BENCH_COMMAND="just bench${*:+ $*}"
    cargo run --release -p portcullis-bench --bin portcullis-bench -- "$@"
    # Issue #5's mutual-TLS figures: their own binary (a tls:// listener, client certificates).
    echo "bench: mutual TLS (bench/src/bin/tls.rs)"
    cargo run --release -p portcullis-bench --bin portcullis-bench-tls -- --portcullis "$CARGO_TARGET_DIR/release/portcullis"
    # Issue #24: what recording the metrics costs per request (bench/src/bin/metrics.rs).
    echo "bench: metrics (bench/src/bin/metrics.rs)"
    cargo run --release -p portcullis-bench --bin portcullis-bench-metrics

# What mediating BuildKit adds to a build's wall time, against an opaque tunnel and the engine itself (scripts/bench-buildkit; BENCHMARKS.md).
bench-buildkit *args: plugins
    #!/usr/bin/env bash
    set -euo pipefail
    PORTCULLIS_ENGINE=dockerd26 PORTCULLIS_ENGINE_DIR={{dockerd26_dir}} scripts/dev-engine start >/dev/null
    cargo build --release -p portcullis
    PORTCULLIS_TEST_ENGINE={{dockerd26}} scripts/bench-buildkit "$@"

# Format the code.
fmt:
    cargo fmt --all

# Check formatting and lints (what CI would reject).
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Formatting, lints and the tests that need no engine (host library, the layering rule, plugin SDK, first-party plugins): quick, before a push.
check: lint
    cargo test -p portcullis --lib --test layers
    cargo test -p portcullis-plugin
    cargo test -p portcullis-baseline-plugin -p portcullis-labels-plugin -p portcullis-tenancy-plugin -p portcullis-redact-plugin

# New interesting inputs land in fuzz/corpus/, which `just test` replays on stable.
# Fuzz the canonicalizer (JSON bodies, paths, queries) with cargo-fuzz on nightly, SECONDS each (default 60).
fuzz seconds="60":
    #!/usr/bin/env bash
    set -euo pipefail
    tools=/var/cache/portcullis/tools
    export PATH="$tools/bin:$PATH"
    rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
    command -v cargo-fuzz >/dev/null || CARGO_TARGET_DIR=/var/cache/portcullis/tools-target cargo install --locked cargo-fuzz --root "$tools"
    export CARGO_TARGET_DIR=/var/cache/portcullis/fuzz-target
    cd fuzz
    for target in json_body path query; do
        echo "fuzz: $target for {{seconds}} s"
        cargo +nightly fuzz run -s none "$target" -- -max_total_time={{seconds}} -max_len=4096
    done

# Natively, not as wasm; the figures and the known equivalent mutants are in docs/testing.md ("Mutation testing").
# Mutation-test the first-party plugins' decision logic with cargo-mutants (args: plugin dirs, default all four); prints caught/missed/unviable per plugin.
mutants *plugins:
    #!/usr/bin/env bash
    set -euo pipefail
    tools=/var/cache/portcullis/tools
    export PATH="$tools/bin:$PATH"
    command -v cargo-mutants >/dev/null || CARGO_TARGET_DIR=/var/cache/portcullis/tools-target cargo install --locked cargo-mutants --root "$tools"
    # A target directory of its own: cargo-mutants builds with `--cap-lints=warn`, and in a
    # shared one that change of flags would rebuild every dependency, there and back.
    export CARGO_TARGET_DIR=/var/cache/portcullis/mutants-target
    [ $# -gt 0 ] || set -- baseline labels tenancy redact
    pkgs=()
    for dir in "$@"; do
        [ -f "plugins/$dir/Cargo.toml" ] || { echo "mutants: no plugin crate plugins/$dir" >&2; exit 1; }
        pkgs+=(-p "$(sed -n 's/^name *= *"\(.*\)"/\1/p' "plugins/$dir/Cargo.toml" | head -n 1)")
    done
    start=$SECONDS
    rc=0
    # One job: the machine's cores are shared. Each mutant runs its own crate's unit tests.
    cargo mutants "${pkgs[@]}" --jobs 1 --output "$CARGO_TARGET_DIR" || rc=$?
    # 0: every mutant caught; 2: some missed; 3: some timed out. Anything else is a failure
    # to run (4: the unmutated tree fails its tests).
    case "$rc" in 0|2|3) ;; *) echo "mutants: cargo mutants failed (exit $rc)" >&2; exit "$rc" ;; esac
    out="$CARGO_TARGET_DIR/mutants.out"
    count() { grep -c "^plugins/$2/" "$out/$1.txt" || true; }
    below=0
    printf '%-10s %7s %7s %8s %9s %9s\n' plugin caught missed timeout unviable caught%
    for dir in "$@"; do
        caught=$(count caught "$dir") missed=$(count missed "$dir")
        timeout=$(count timeout "$dir") unviable=$(count unviable "$dir")
        # A mutant that makes the tests hang is detected too; unviable ones do not build.
        viable=$((caught + missed + timeout))
        pct=$(awk -v d=$((caught + timeout)) -v v="$viable" 'BEGIN { printf "%.1f", v ? 100 * d / v : 100 }')
        printf '%-10s %7d %7d %8d %9d %8s%%\n' "$dir" "$caught" "$missed" "$timeout" "$unviable" "$pct"
        awk -v p="$pct" 'BEGIN { exit !(p < 90) }' && below=1
    done
    echo "mutants: $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s; the lists (caught.txt, missed.txt, ...) are in $out"
    [ "$below" = 0 ] || { echo "mutants: a plugin is below 90 % of viable mutants caught" >&2; exit 1; }
