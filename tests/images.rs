//! Image tags through the shipped `policies/portcullis.toml`, as two plain unix users: a
//! repository belongs to the user who made its first tag through the gateway, and only that
//! user changes, removes or pushes its tags, in every form the docker CLI has (tag, build -t,
//! commit, import, rmi by tag and by id, prune -a, push), whatever spelling of the name is
//! used. Shared base images are everyone's to use and nobody's to move. Each refusal is
//! judged by the engine's state afterwards, asked directly. Builds here use the classic
//! builder (`classic()`).

use std::process::Command;

use portcullis_tests::*;

/// `cmd` building with the classic builder (`POST /build`), which these tests judge: with the
/// buildx CLI plugin installed, `docker build` would otherwise build with BuildKit.
fn classic(mut cmd: Command) -> Command {
    cmd.env("DOCKER_BUILDKIT", "0");
    cmd
}

/// A build context directory with `dockerfile`, readable by every test user.
fn context(dockerfile: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).expect("write");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(
        dir.path().join("Dockerfile"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    dir
}

fn path(dir: &tempfile::TempDir) -> &str {
    dir.path().to_str().expect("utf-8 path")
}

#[test]
fn tags_are_changed_only_by_the_user_who_made_the_repository() {
    let (alice, bob) = ("pc-img-alice", "pc-img-bob");
    let _users = Users::create(&[alice, bob]);
    let gw = Gateway::start_shipped(None);
    let docker = |user: &str| as_user(user, &gw.docker_host(), "docker");
    let mut clean = Cleanup::new();
    let a = clean.image(&unique("alice-app"));
    let b = clean.image(&unique("bob-app"));
    clean.image(&format!("{a}:v2"));
    clean.image(&format!("{a}:bob"));

    let alice_ctx = context(&format!("FROM {IMAGE}\nLABEL made-by=alice\n"));
    let bob_ctx = context(&format!("FROM {IMAGE}\nLABEL made-by=bob\n"));
    pass(classic(docker(alice)).args(["build", "-q", "-t", &a, path(&alice_ctx)]));
    pass(classic(docker(bob)).args(["build", "-q", "-t", &b, path(&bob_ctx)]));
    let alices = image_id(&a).expect("alice's image");
    let bobs = image_id(&b).expect("bob's image");
    assert_ne!(alices, bobs);

    let theirs = format!("tenancy: [image-owner] repo: tag \"{a}:latest\" belongs to another user (the repository \"{a}\" is theirs); {bob} may change only its own tags");
    // Moving alice's tag onto bob's image, in every spelling of the name; adding a tag of
    // her repository she has not made yet.
    refused(docker(bob).args(["tag", &b, &a]), &[&theirs]);
    refused(
        docker(bob).args(["tag", &b, &format!("docker.io/library/{a}:latest")]),
        &[&theirs],
    );
    refused(
        docker(bob).args(["tag", &b, &format!("{a}:v2")]),
        &[&format!("tag \"{a}:v2\" belongs to another user")],
    );
    // A fresh build, a commit and an import over it.
    refused(
        classic(docker(bob)).args(["build", "-q", "-t", &a, path(&bob_ctx)]),
        &[&format!(
            "[image-owner] t[0]: tag \"{a}:latest\" belongs to another user"
        )],
    );
    // Refused before the engine reads the context, the client still gets the refusal, not a
    // broken pipe: the gateway reads the rest of the upload first.
    let big = context(&format!("FROM {IMAGE}\n"));
    std::fs::write(big.path().join("blob"), vec![7u8; 8 << 20]).expect("write");
    std::fs::set_permissions(
        big.path().join("blob"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    refused(
        classic(docker(bob)).args(["build", "-q", "-t", &a, path(&big)]),
        &["Error response from daemon: tenancy: [image-owner] t[0]"],
    );
    let c = clean.container(&unique("bob-box"));
    pass(docker(bob).args(["create", "--name", &c, IMAGE, "true"]));
    refused(
        docker(bob).args(["commit", &c, &a]),
        &[&format!("tag \"{a}:latest\" belongs to another user")],
    );
    let tar_dir = context("");
    let tar = tar_dir.path().join("rootfs.tar");
    pass(Command::new("tar").args([
        "-cf",
        tar.to_str().unwrap(),
        "-C",
        path(&tar_dir),
        "Dockerfile",
    ]));
    std::fs::set_permissions(&tar, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    refused(
        docker(bob).args(["import", tar.to_str().unwrap(), &format!("{a}:bob")]),
        &[&format!("tag \"{a}:bob\" belongs to another user")],
    );
    // Removing it, by tag, by id, by pruning; pushing it.
    refused(
        docker(bob).args(["rmi", &a]),
        &[
            &format!("[image-owner] path: tag \"{a}:latest\" belongs to another user"),
            "may remove only",
        ],
    );
    refused(
        docker(bob).args(["rmi", "-f", &alices]),
        &[&format!(
            "RepoTags[0]: tag \"{a}:latest\" belongs to another user"
        )],
    );
    refused(
        docker(bob).args(["image", "prune", "-a", "-f"]),
        &["only administrators prune tagged images"],
    );
    refused(
        docker(bob).args(["push", &a]),
        &["may push only its own tags"],
    );
    assert_eq!(
        image_id(&a).as_deref(),
        Some(alices.as_str()),
        "alice's tag moved"
    );
    assert_eq!(image_id(&format!("{a}:v2")), None);
    assert_eq!(image_id(&format!("{a}:bob")), None);

    // Through raw HTTP, with the name spelled out in full: the same refusal.
    let raw = pass(as_user(bob, &gw.docker_host(), "curl").args([
        "-s",
        "-w",
        "\n%{http_code}",
        "--unix-socket",
        gw.socket.to_str().expect("socket path"),
        "-X",
        "POST",
        &format!("http://gateway/v1.41/images/{bobs}/tag?repo=docker.io/library/{a}&tag=latest"),
    ]));
    assert!(
        raw.contains("403") && raw.contains("belongs to another user"),
        "{raw}"
    );

    // A forged owner label is only a label: bob's image saying it is alice's stays bob's,
    // and alice cannot take over bob's repository with it.
    let forged = clean.image(&unique("forged"));
    let forged_ctx = context(&format!(
        "FROM {IMAGE}\nLABEL io.portcullis.owner={alice}\n"
    ));
    pass(classic(docker(bob)).args(["build", "-q", "-t", &forged, path(&forged_ctx)]));
    let forged_id = image_id(&forged).expect("forged image");
    refused(
        docker(alice).args(["tag", &a, &forged]),
        &["belongs to another user"],
    );
    refused(
        docker(alice).args(["rmi", &forged]),
        &["may remove only its own tags"],
    );
    assert_eq!(image_id(&forged).as_deref(), Some(forged_id.as_str()));

    // A shared base image: used by everyone, moved by nobody but administrators.
    let base = image_id(IMAGE).expect("the test image");
    refused(
        docker(bob).args(["tag", &b, IMAGE]),
        &[
            &format!("tag \"{IMAGE}\" is a shared image"),
            "only administrators change it",
        ],
    );
    refused(
        docker(bob).args(["rmi", IMAGE]),
        &["only administrators remove it"],
    );
    assert_eq!(image_id(IMAGE).as_deref(), Some(base.as_str()));

    // Bob may run and build from alice's image (images are shared), under his own names.
    pass(docker(bob).args(["run", "--rm", &a, "true"]));
    let from_alice = context(&format!("FROM {a}\nLABEL made-by=bob\n"));
    pass(classic(docker(bob)).args(["build", "-q", "-t", &format!("{b}:2"), path(&from_alice)]));
    clean.image(&format!("{b}:2"));

    // Alice changes and removes her own tags; her repository stays hers when it is empty.
    pass(docker(alice).args(["tag", &b, &format!("{a}:v2")]));
    assert_eq!(image_id(&format!("{a}:v2")).as_deref(), Some(bobs.as_str()));
    pass(docker(alice).args(["rmi", &format!("{a}:v2")]));
    pass(docker(alice).args(["rmi", &a]));
    assert_eq!(image_id(&a), None);
    assert_eq!(
        image_id(&b).as_deref(),
        Some(bobs.as_str()),
        "bob's image went with alice's tag"
    );
    refused(docker(bob).args(["tag", &b, &a]), &[&theirs]);
    assert_eq!(image_id(&a), None);
}

/// An image's labels reach the containers made from it: the engine merges them under the
/// container's own. With per-team namespaces (`policies/examples/team-namespaces.toml`'s
/// rules), a user cannot get another team's label by running an image that carries it.
#[test]
fn labels_an_image_brings_are_judged_on_the_containers_made_from_it() {
    let (alice, bob) = ("pc-inh-alice", "pc-inh-bob");
    let _users = Users::create(&[alice, bob]);
    let gw = gateway(&[plugin_entry(
        "labels",
        &plugin_component("labels"),
        "phase = \"mutate\"",
        "namespace_template = \"com.acme.{group}.\"\nnamespace_exempt = [\"com.acme.team\", \"portcullis-test\"]\n[plugins.config.schema.properties]\n\"com.acme.team\" = { const = \"{group}\" }",
    )]);
    gw.open_to_everyone();
    let docker = |user: &str| as_user(user, &gw.docker_host(), "docker");
    let mut clean = Cleanup::new();
    // Made directly on the engine, as a crafted image would be: its labels were never judged.
    let image = clean.image(&unique("team-a-image"));
    let ctx = context(&format!(
        "FROM {IMAGE}\nLABEL com.acme.{alice}.route=internal com.acme.team={alice} maintainer=someone\n"
    ));
    pass(classic(docker_direct()).args(["build", "-q", "-t", &image, path(&ctx)]));

    let exists = |name: &str| {
        run(docker_direct().args(["container", "inspect", name]))
            .status
            .success()
    };
    let create = |user: &str, name: &str, extra: &[&str]| {
        let mut cmd = docker(user);
        cmd.args(["create", "--name", name, "--label", TEST_LABEL])
            .args(extra)
            .args([image.as_str(), "true"]);
        cmd
    };
    let inherited = format!("Image \"{image}\" (labels the container inherits)");
    let bobs = clean.container(&unique("inherits"));
    refused(
        &mut create(bob, &bobs, &["--label", &format!("com.acme.team={bob}")]),
        &[&format!(
            "labels: [namespace] {inherited}[\"com.acme.{alice}.route\"]: outside the caller's namespace (allowed prefixes: com.acme.{bob}.)"
        )],
    );
    assert!(!exists(&bobs));
    // The image's maker runs it; `maintainer` is in nobody's namespace.
    let alices = clean.container(&unique("inherits-own"));
    pass(&mut create(alice, &alices, &[]));
    assert!(exists(&alices));

    // A team label's value bound to the caller: overridden, or refused when inherited.
    let plain = clean.image(&unique("team-label-image"));
    let ctx = context(&format!("FROM {IMAGE}\nLABEL com.acme.team={alice}\n"));
    pass(classic(docker_direct()).args(["build", "-q", "-t", &plain, path(&ctx)]));
    let mut cmd = docker(bob);
    let claimed = clean.container(&unique("claims"));
    cmd.args([
        "create", "--name", &claimed, "--label", TEST_LABEL, &plain, "true",
    ]);
    refused(
        &mut cmd,
        &[&format!(
            "[\"com.acme.team\"] = \"{alice}\": must be \"{bob}\""
        )],
    );
    assert!(!exists(&claimed));
    let own = clean.container(&unique("overrides"));
    let mut cmd = docker(bob);
    cmd.args([
        "create",
        "--name",
        &own,
        "--label",
        TEST_LABEL,
        "--label",
        &format!("com.acme.team={bob}"),
        &plain,
        "true",
    ]);
    pass(&mut cmd);
    let label = ok(docker_direct().args([
        "inspect",
        "--format",
        "{{index .Config.Labels \"com.acme.team\"}}",
        &own,
    ]));
    assert_eq!(label.trim(), bob);
}

/// `docker load` moves the tags its archive names: the gateway reads them from the archive
/// before the engine does, so an archive naming another user's tag is refused, and one
/// naming a new repository makes it the loader's.
#[test]
fn docker_load_is_judged_by_the_tags_inside_the_archive() {
    use std::os::unix::fs::PermissionsExt;
    let (alice, bob) = ("pc-load-alice", "pc-load-bob");
    let _users = Users::create(&[alice, bob]);
    let gw = Gateway::start_shipped(None);
    let docker = |user: &str| as_user(user, &gw.docker_host(), "docker");
    let mut clean = Cleanup::new();
    let a = clean.image(&unique("alice-loaded"));
    let b = clean.image(&unique("bob-saved"));
    let fresh = clean.image(&unique("bob-loaded"));
    clean.image(&format!("{fresh}:2"));
    pass(classic(docker(alice)).args([
        "build",
        "-q",
        "-t",
        &a,
        path(&context(&format!("FROM {IMAGE}\nLABEL made-by=alice\n"))),
    ]));
    pass(classic(docker(bob)).args([
        "build",
        "-q",
        "-t",
        &b,
        path(&context(&format!("FROM {IMAGE}\nLABEL made-by=bob\n"))),
    ]));
    let alices = image_id(&a).expect("alice's image");
    let bobs = image_id(&b).expect("bob's image");

    // Bob saves his image and rewrites the archive's index to name other tags.
    let work = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let saved = work.path().join("saved.tar");
    pass(docker(bob).args(["save", "-o", saved.to_str().unwrap(), &b]));
    std::fs::set_permissions(&saved, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let rewrite = |name: &str| {
        let dir = work.path().join(name);
        std::fs::create_dir(&dir).expect("mkdir");
        pass(Command::new("tar").args([
            "-xf",
            saved.to_str().unwrap(),
            "-C",
            dir.to_str().unwrap(),
        ]));
        for index in ["manifest.json", "repositories"] {
            let file = dir.join(index);
            let text = std::fs::read_to_string(&file).expect("index");
            std::fs::write(&file, text.replace(&b, name)).expect("write");
        }
        let tar = work.path().join(format!("{name}.tar"));
        pass(Command::new("tar").args([
            "-cf",
            tar.to_str().unwrap(),
            "-C",
            dir.to_str().unwrap(),
            ".",
        ]));
        std::fs::set_permissions(&tar, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        tar
    };
    // Loading what is there already moves nothing: another user (alice) loads bob's archive
    // unchanged, and bob a shared image's, as a CI job loading a cached image does.
    pass(docker(alice).args(["load", "-i", saved.to_str().unwrap()]));
    assert_eq!(image_id(&b).as_deref(), Some(bobs.as_str()));
    let base = work.path().join("base.tar");
    pass(docker(bob).args(["save", "-o", base.to_str().unwrap(), IMAGE]));
    pass(docker(bob).args(["load", "-i", base.to_str().unwrap()]));
    let base_id = image_id(IMAGE).expect("the test image");
    pass(docker(bob).args(["tag", &base_id, IMAGE]));
    refused(docker(bob).args(["tag", &b, IMAGE]), &["is a shared image"]);
    assert_eq!(image_id(IMAGE).as_deref(), Some(base_id.as_str()));

    let onto_alices = rewrite(&a);
    refused(
        docker(bob).args(["load", "-i", onto_alices.to_str().unwrap()]),
        &[&format!("tenancy: [image-owner] manifest.json[0].RepoTags[0]: tag \"{a}:latest\" belongs to another user")],
    );
    assert_eq!(
        image_id(&a).as_deref(),
        Some(alices.as_str()),
        "the load moved alice's tag"
    );

    let own = rewrite(&fresh);
    let out = pass(docker(bob).args(["load", "-i", own.to_str().unwrap()]));
    assert!(
        out.contains(&format!(
            "Loaded image: {}",
            loaded_name(&format!("{fresh}:latest"))
        )),
        "{out}"
    );
    assert_eq!(image_id(&fresh).as_deref(), Some(bobs.as_str()));
    // The loaded repository is bob's now.
    pass(docker(bob).args(["tag", &b, &format!("{fresh}:2")]));
    refused(
        docker(alice).args(["tag", &a, &format!("{fresh}:3")]),
        &["belongs to another user"],
    );
    assert_eq!(image_id(&format!("{fresh}:3")), None);
}
