//! The deployment examples in `deploy/` against the real binary: every manifest parses, the
//! commands use only flags `snapkv` accepts, probes, ports and annotations agree with what the
//! server listens on, the pods run unprivileged, and the Dockerfile builds a release binary that
//! runs as a non-root user.

mod common;

use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One YAML document of a manifest file.
struct Doc {
    file: String,
    value: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }

    fn name(&self) -> String {
        format!(
            "{}: {} {}",
            self.file,
            self.kind(),
            self.value["metadata"]["name"]
        )
    }

    /// The pod template (`metadata` and `spec`) of a workload; `None` for other kinds.
    fn pod_template(&self) -> Option<&Value> {
        let spec = &self.value["spec"];
        match self.kind() {
            "Deployment" | "StatefulSet" | "DaemonSet" | "Job" => Some(&spec["template"]),
            "CronJob" => Some(&spec["jobTemplate"]["spec"]["template"]),
            _ => None,
        }
    }
}

/// Every YAML document of every `deploy/kubernetes/*.yaml`.
fn manifests() -> Vec<Doc> {
    let dir = repo().join("deploy/kubernetes");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    let mut docs = Vec::new();
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_norway::Deserializer::from_str(&text) {
            let value = Value::deserialize(doc).unwrap_or_else(|e| panic!("{file}: {e}"));
            if !value.is_null() {
                docs.push(Doc {
                    file: file.clone(),
                    value,
                });
            }
        }
    }
    docs
}

/// The one document of `kind`.
fn only<'a>(docs: &'a [Doc], kind: &str) -> &'a Doc {
    let found: Vec<&Doc> = docs.iter().filter(|d| d.kind() == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind}");
    found[0]
}

fn array(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

fn strings(v: &Value) -> Vec<String> {
    array(v)
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

/// The containers of a pod template that run the snapkv image.
fn snapkv_containers(template: &Value) -> Vec<&Value> {
    array(&template["spec"]["containers"])
        .iter()
        .filter(|c| c["image"].as_str().unwrap_or_default().contains("snapkv"))
        .collect()
}

/// The shell script of a container that runs `sh -c SCRIPT`.
fn script(container: &Value) -> Option<String> {
    let command = strings(&container["command"]);
    let shell = command.first()?.rsplit('/').next() == Some("sh");
    if !shell {
        return None;
    }
    assert_eq!(command[1..], ["-c"], "{command:?}");
    let args = strings(&container["args"]);
    assert_eq!(args.len(), 1, "sh -c takes one script: {args:?}");
    Some(args[0].clone())
}

/// The `snapkv` command lines a container runs, each without the `snapkv`: its `args` under the
/// image's entrypoint, or every `snapkv ...` command of its `sh -c` script.
fn snapkv_commands(container: &Value) -> Vec<Vec<String>> {
    let Some(script) = script(container) else {
        assert!(container["command"].is_null(), "{}", container["command"]);
        return vec![strings(&container["args"])];
    };
    script
        .replace("\\\n", " ")
        .split(['\n', ';'])
        .flat_map(|l| l.split("&&"))
        .map(|c| c.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .filter(|words| words.first().is_some_and(|w| w == "snapkv"))
        .map(|words| words[1..].to_vec())
        .collect()
}

/// The value of `--flag V` or `--flag=V` in a command.
fn flag<'a>(command: &'a [String], name: &str) -> Option<&'a str> {
    command.iter().enumerate().find_map(|(i, w)| {
        if w == name {
            command.get(i + 1).map(String::as_str)
        } else {
            w.strip_prefix(name)?.strip_prefix('=')
        }
    })
}

/// Every positional argument (neither a flag nor a flag's value) after the subcommand.
fn positionals(command: &[String], help: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut words = command[1..].iter();
    while let Some(w) = words.next() {
        if w.starts_with("--") {
            // A flag that shows a <VALUE> in the help takes the next word.
            let takes_value = help
                .lines()
                .map(str::trim_start)
                .any(|l| l.contains(&format!("{w} <")));
            if takes_value && !w.contains('=') {
                words.next();
            }
        } else {
            out.push(w.clone());
        }
    }
    out
}

/// A container's port number named or numbered by `port`.
fn resolve_port(container: &Value, port: &Value) -> u64 {
    if let Some(n) = port.as_u64() {
        return n;
    }
    let name = port.as_str().expect("a port name or number");
    array(&container["ports"])
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

/// Seconds of a duration flag like `25s`, `2m` or `500ms`.
fn seconds(s: &str) -> f64 {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let n: f64 = digits.parse().unwrap();
    match &s[digits.len()..] {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => panic!("unknown unit in {s}"),
    }
}

/// The mount path under which a container writes `path`, if any.
fn mount_of<'a>(container: &'a Value, path: &str) -> Option<&'a str> {
    array(&container["volumeMounts"])
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .find(|m| Path::new(path).starts_with(m))
}

#[test]
fn every_document_names_its_api_kind_and_name() {
    let docs = manifests();
    for d in &docs {
        assert!(d.value["apiVersion"].is_string(), "{}", d.name());
        assert!(!d.kind().is_empty(), "{}", d.name());
        assert!(d.value["metadata"]["name"].is_string(), "{}", d.name());
    }
    let kinds: BTreeSet<&str> = docs.iter().map(Doc::kind).collect();
    for kind in ["Deployment", "Service", "CronJob"] {
        assert!(kinds.contains(kind), "no {kind} in {kinds:?}");
    }
}

#[test]
fn commands_use_only_flags_and_variables_the_binary_knows() {
    let mut help: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    let mut checked = 0;
    for d in manifests() {
        let Some(template) = d.pod_template() else {
            continue;
        };
        for c in snapkv_containers(template) {
            let commands = snapkv_commands(c);
            assert!(!commands.is_empty(), "{}: no snapkv command", d.name());
            let mut texts = Vec::new();
            for command in &commands {
                let sub = command.first().expect("a subcommand");
                let (text, flags) = help
                    .entry(sub.clone())
                    .or_insert_with(|| (common::help_text(sub), common::help_flags(sub)));
                for f in command.iter().filter(|w| w.starts_with("--")) {
                    let f = f.split('=').next().unwrap();
                    assert!(
                        flags.contains(f),
                        "{}: snapkv {sub} has no {f}; it has {flags:?}",
                        d.name()
                    );
                    checked += 1;
                }
                texts.push(text.clone());
            }
            // SNAPKV_* variables are ones the commands document (`[env: ...]`, SNAPKV_LOG).
            for e in array(&c["env"]) {
                let name = e["name"].as_str().unwrap();
                if name.starts_with("SNAPKV_") {
                    assert!(
                        texts.iter().any(|t| t.contains(name)),
                        "{}: no command reads {name}",
                        d.name()
                    );
                }
            }
        }
    }
    assert!(checked >= 10, "only {checked} flags checked");
}

#[test]
fn pods_run_unprivileged_with_bounded_resources_and_secret_credentials() {
    for d in manifests() {
        let Some(template) = d.pod_template() else {
            continue;
        };
        let pod = &template["spec"];
        let name = d.name();
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_ne!(pod["securityContext"]["runAsUser"], 0, "{name}");
        let containers = array(&pod["initContainers"])
            .iter()
            .chain(array(&pod["containers"]));
        for c in containers {
            let name = format!("{name}, container {}", c["name"]);
            let sc = &c["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
            assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"], "{name}");
            let resources = &c["resources"];
            assert!(resources["requests"]["memory"].is_string(), "{name}");
            assert!(resources["limits"]["memory"].is_string(), "{name}");
            for e in array(&c["env"]) {
                let var = e["name"].as_str().unwrap();
                let secret = ["SECRET", "ACCESS_KEY", "TOKEN", "PASSWORD"]
                    .iter()
                    .any(|s| var.contains(s));
                if secret {
                    assert!(
                        e["value"].is_null(),
                        "{name}: {var} is written in the manifest"
                    );
                    assert!(
                        e["valueFrom"]["secretKeyRef"]["name"].is_string(),
                        "{name}: {var} does not come from a Secret"
                    );
                }
            }
        }
    }
}

/// The workloads that run `snapkv serve`: the Deployment of whole readers and the StatefulSet
/// of sharded ones.
fn readers(docs: &[Doc]) -> Vec<&Doc> {
    let found: Vec<&Doc> = docs
        .iter()
        .filter(|d| {
            d.pod_template().is_some_and(|t| {
                snapkv_containers(t)
                    .iter()
                    .any(|c| snapkv_commands(c).first().is_some_and(|s| s[0] == "serve"))
            })
        })
        .collect();
    let kinds: BTreeSet<&str> = found.iter().map(|d| d.kind()).collect();
    assert_eq!(kinds, BTreeSet::from(["Deployment", "StatefulSet"]));
    found
}

#[test]
fn reader_probes_ports_annotations_and_cache_agree_with_serve() {
    let docs = manifests();
    for reader in readers(&docs) {
        check_reader(&docs, reader);
    }
}

fn check_reader(docs: &[Doc], reader: &Doc) {
    let template = reader.pod_template().unwrap();
    let containers = snapkv_containers(template);
    assert_eq!(containers.len(), 1);
    let c = containers[0];
    let serve = &snapkv_commands(c)[0];
    assert_eq!(serve[0], "serve");
    assert_eq!(flag(serve, "--log-format"), Some("json"));
    assert!(flag(serve, "--store").unwrap().starts_with("s3://"));
    assert!(flag(serve, "--dataset").is_some());

    // The server listens on all interfaces, on the container port the probes use.
    let listen = flag(serve, "--listen").expect("--listen");
    let (host, port) = listen.rsplit_once(':').unwrap();
    assert_eq!(host, "0.0.0.0");
    let port: u64 = port.parse().unwrap();
    let ports: Vec<u64> = array(&c["ports"])
        .iter()
        .map(|p| p["containerPort"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, [port]);
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(resolve_port(c, &get["port"]), port, "{probe}");
    }

    // Prometheus finds /metrics on the same port.
    let annotations = &template["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], port.to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");

    // The Services of its file send traffic to the pods' serving port.
    let labels = template["metadata"]["labels"].as_object().unwrap();
    let services: Vec<&Doc> = docs
        .iter()
        .filter(|d| d.file == reader.file && d.kind() == "Service")
        .collect();
    assert!(!services.is_empty(), "{}: no Service", reader.name());
    for service in services {
        let selector = service.value["spec"]["selector"].as_object().unwrap();
        for (k, v) in selector {
            assert_eq!(labels.get(k), Some(v), "{} selects {k}={v}", service.name());
        }
        for p in array(&service.value["spec"]["ports"]) {
            assert_eq!(resolve_port(c, &p["targetPort"]), port);
        }
    }

    // The cache directory is a mounted volume with a size bound (the root is read-only).
    let cache_dir = flag(serve, "--cache-dir").expect("--cache-dir");
    let mount = array(&c["volumeMounts"])
        .iter()
        .find(|m| m["mountPath"] == cache_dir)
        .expect("a volume mounted at --cache-dir");
    let volume = array(&template["spec"]["volumes"])
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the cache volume");
    assert!(volume["emptyDir"]["sizeLimit"].is_string(), "{volume}");
    assert!(c["resources"]["requests"]["cpu"].is_string());

    // Kubernetes waits for the preStop hook and the drain before it kills the container.
    let pre_stop = strings(&c["lifecycle"]["preStop"]["exec"]["command"]);
    let pre_stop = match pre_stop.as_slice() {
        [sleep, s] if sleep == "sleep" => seconds(s),
        [] => 0.0,
        other => panic!("unexpected preStop {other:?}"),
    };
    let drain = seconds(flag(serve, "--drain-timeout").unwrap_or("30s"));
    let grace = template["spec"]["terminationGracePeriodSeconds"]
        .as_f64()
        .unwrap_or(30.0);
    assert!(
        grace > pre_stop + drain,
        "terminationGracePeriodSeconds {grace} <= preStop {pre_stop} + drain {drain}"
    );
}

#[test]
fn sharded_readers_split_the_shards_by_ordinal_and_find_each_other() {
    let docs = manifests();
    let set = only(&docs, "StatefulSet");
    let template = set.pod_template().unwrap();
    let c = snapkv_containers(template)[0];
    let serve = &snapkv_commands(c)[0];
    // --shard-of ORDINAL/REPLICAS: the ordinal from the pod-index label, the replicas the
    // StatefulSet's.
    let share = flag(serve, "--shard-of").expect("--shard-of");
    let (ordinal, replicas) = share.split_once('/').unwrap();
    let replicas: u64 = replicas.parse().unwrap();
    assert_eq!(set.value["spec"]["replicas"].as_u64(), Some(replicas));
    let var = ordinal
        .strip_prefix("$(")
        .and_then(|v| v.strip_suffix(')'))
        .expect("the ordinal is a $(VARIABLE)");
    let env = array(&c["env"])
        .iter()
        .find(|e| e["name"] == var)
        .unwrap_or_else(|| panic!("no {var} in env"));
    assert_eq!(
        env["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.labels['apps.kubernetes.io/pod-index']"
    );
    // Every ordinal holds a share of the shards, whatever their number.
    for shards in [1usize, 2, 8, 64] {
        for o in 0..replicas as usize {
            let held = snapkv_format::Selection::OrdinalOf {
                ordinal: o,
                replicas: replicas as usize,
            }
            .held(shards);
            assert!(
                held.is_some_and(|h| !h.is_empty()),
                "{o}/{replicas} of {shards}"
            );
        }
    }
    // --peers names the StatefulSet's headless Service, on the serving port.
    let peers = flag(serve, "--peers").expect("--peers");
    let (name, port) = peers
        .strip_prefix("dns+http://")
        .expect("peers found through DNS")
        .rsplit_once(':')
        .unwrap();
    assert_eq!(set.value["spec"]["serviceName"], name);
    let headless = docs
        .iter()
        .find(|d| d.kind() == "Service" && d.value["metadata"]["name"] == name)
        .expect("the peers' Service");
    assert_eq!(headless.value["spec"]["clusterIP"], "None");
    let listen = flag(serve, "--listen").unwrap();
    assert_eq!(listen.rsplit_once(':').unwrap().1, port);
    let service_port = array(&headless.value["spec"]["ports"])
        .iter()
        .find(|p| p["port"].as_u64().map(|p| p.to_string()).as_deref() == Some(port))
        .expect("the headless Service exposes the serving port");
    assert_eq!(
        resolve_port(c, &service_port["targetPort"]).to_string(),
        port
    );
    // Forwarding gives up before a client's usual timeout.
    assert!(seconds(flag(serve, "--forward-timeout").unwrap_or("5s")) <= 5.0);
}

#[test]
fn publisher_builds_then_publishes_what_readers_follow() {
    let docs = manifests();
    let cron = only(&docs, "CronJob");
    assert_eq!(cron.value["spec"]["concurrencyPolicy"], "Forbid");
    let template = cron.pod_template().unwrap();
    let restart = template["spec"]["restartPolicy"].as_str().unwrap();
    assert!(["Never", "OnFailure"].contains(&restart), "{restart}");
    let containers = snapkv_containers(template);
    assert_eq!(containers.len(), 1);
    let c = containers[0];

    let script = script(c).expect("a sh -c script");
    let first = script.lines().map(str::trim).find(|l| !l.is_empty());
    assert!(
        first.is_some_and(|l| l.starts_with("set -e")),
        "the script must stop at the first failure: {first:?}"
    );
    let commands = snapkv_commands(c);
    let subs: Vec<&str> = commands.iter().map(|c| c[0].as_str()).collect();
    let build = subs.iter().position(|s| *s == "build").expect("a build");
    let publish = subs
        .iter()
        .position(|s| *s == "publish")
        .expect("a publish");
    assert!(build < publish, "{subs:?}");
    let (build, publish) = (&commands[build], &commands[publish]);

    // What build writes lies on a mounted volume (the root file system is read-only), and is
    // what publish uploads.
    let output = flag(build, "--output").expect("--output");
    for path in [Some(output), flag(build, "--temp-dir")]
        .into_iter()
        .flatten()
    {
        assert!(mount_of(c, path).is_some(), "{path} is on no volume");
    }
    let files = positionals(publish, &common::help_text("publish"));
    assert_eq!(files, [output]);

    // The publisher writes the store and dataset the readers follow.
    let deployment = only(&docs, "Deployment");
    let reader = snapkv_containers(deployment.pod_template().unwrap())[0];
    let serve = &snapkv_commands(reader)[0];
    for f in ["--store", "--dataset"] {
        assert_eq!(flag(publish, f), flag(serve, f), "{f}");
    }
}

/// The Dockerfile's instructions, continuation lines joined and comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                let (op, rest) = current.split_once(' ').unwrap_or((&current, ""));
                out.push((op.to_uppercase(), rest.trim().to_owned()));
                current.clear();
            }
        }
    }
    out
}

#[test]
fn dockerfile_builds_a_release_binary_that_runs_unprivileged() {
    let instructions = dockerfile();
    let all = |op: &str| -> Vec<&str> {
        instructions
            .iter()
            .filter(|(o, _)| o == op)
            .map(|(_, rest)| rest.as_str())
            .collect()
    };
    assert!(all("FROM").len() >= 2, "not a multi-stage build");
    assert!(
        all("RUN")
            .iter()
            .any(|r| r.contains("cargo build") && r.contains("--release")),
        "no cargo build --release"
    );
    assert_eq!(all("ENTRYPOINT"), [r#"["snapkv"]"#]);

    // The final stage runs as a numeric, non-root user: the one the manifests name.
    let last_from = instructions.iter().rposition(|(o, _)| o == "FROM").unwrap();
    let users: Vec<&str> = instructions[last_from..]
        .iter()
        .filter(|(o, _)| o == "USER")
        .map(|(_, r)| r.as_str())
        .collect();
    let user = users.last().expect("a USER in the runtime stage");
    let uid = user.split(':').next().unwrap();
    assert!(
        uid.parse::<u32>().is_ok_and(|n| n != 0),
        "USER {user} is root or not numeric"
    );
    for d in manifests() {
        if let Some(t) = d.pod_template() {
            assert_eq!(
                t["spec"]["securityContext"]["runAsUser"].to_string(),
                uid,
                "{}",
                d.name()
            );
        }
    }

    // The exposed port is the one the reader manifest serves on; the SNAPKV_* defaults exist.
    let docs = manifests();
    let reader = snapkv_containers(only(&docs, "Deployment").pod_template().unwrap())[0];
    let port = reader["ports"][0]["containerPort"].to_string();
    assert_eq!(all("EXPOSE"), [port.as_str()]);
    let serve_help = common::help_text("serve");
    for env in all("ENV") {
        for var in env.split_whitespace().filter_map(|kv| kv.split_once('=')) {
            if var.0.starts_with("SNAPKV_") {
                assert!(serve_help.contains(var.0), "serve does not read {}", var.0);
            }
        }
    }

    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    let ignored: Vec<&str> = ignore.lines().map(str::trim).collect();
    for must in ["target/", "snapkv-demo/", "fuzz/artifacts/"] {
        assert!(ignored.contains(&must), ".dockerignore lacks {must}");
    }
}

/// The publisher reads the job output from object storage itself: no copy step before it.
#[test]
fn publisher_builds_straight_from_object_storage() {
    let docs = manifests();
    let cronjob = only(&docs, "CronJob");
    let template = cronjob.pod_template().unwrap();
    assert!(
        array(&template["spec"]["initContainers"]).is_empty(),
        "{}: an init container copies the input",
        cronjob.name()
    );
    let builds: Vec<Vec<String>> = snapkv_containers(template)
        .into_iter()
        .flat_map(snapkv_commands)
        .filter(|c| c.first().is_some_and(|w| w == "build"))
        .collect();
    assert_eq!(builds.len(), 1, "{builds:?}");
    let input = flag(&builds[0], "--input").unwrap();
    assert!(input.starts_with("s3://"), "{input}");
}

/// promtool, from `SNAPKV_PROMTOOL` or `PATH` (`scripts/test` installs it).
fn promtool(args: &[&str]) -> String {
    let tool = std::env::var("SNAPKV_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let out = std::process::Command::new(&tool)
        .args(args)
        .current_dir(repo().join("deploy/prometheus"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool} (install Debian's prometheus): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

/// The alert rules are valid PromQL, fire as their unit tests say, and use only metrics and
/// label values that a real reader exports: one following a store, with a staged version.
#[test]
fn prometheus_alert_rules_pass_their_tests_on_the_readers_metrics() {
    promtool(&["check", "rules", "snapkv-rules.yaml"]);
    let tested = promtool(&["test", "rules", "snapkv-rules.test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");

    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store").display().to_string();
    let cache = dir.path().join("cache").display().to_string();
    for (v, stage) in [("v1", false), ("v2", true)] {
        let file = dir.path().join(format!("{v}.snapkv"));
        common::write_snapshot(&file, v, &common::dataset(v, 10), true);
        let file = file.display().to_string();
        let mut args = vec![
            "publish",
            "--store",
            &store,
            "--dataset",
            "d",
            "--version",
            v,
        ];
        if stage {
            args.push("--stage");
        }
        args.push(&file);
        common::snapkv_stdout(&args);
    }
    let server = common::Server::start(&[
        "--store",
        &store,
        "--dataset",
        "d",
        "--cache-dir",
        &cache,
        "--poll-interval",
        "50ms",
        "--preview-staged",
    ]);
    let c = common::client();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let metrics = loop {
        let text = c
            .get(format!("{}/metrics", server.url))
            .send()
            .unwrap()
            .text()
            .unwrap();
        if text.contains("role=\"staged\"") {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no staged age:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let samples: Vec<&str> = metrics.lines().filter(|l| !l.starts_with('#')).collect();
    let rules =
        std::fs::read_to_string(repo().join("deploy/prometheus/snapkv-rules.yaml")).unwrap();
    let exprs: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr: "))
        .collect();
    assert_eq!(exprs.len(), 5, "{rules}");
    let mut checked = 0;
    for expr in exprs {
        for (i, _) in expr.match_indices("snapkv_") {
            let name: String = expr[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let selector = match expr[i + name.len()..].strip_prefix('{') {
                Some(rest) => rest.split('}').next().unwrap().to_owned(),
                None => String::new(),
            };
            let found = samples.iter().any(|s| {
                s.starts_with(&format!("{name}{{"))
                    && selector
                        .split(',')
                        .all(|m| m.is_empty() || s.contains(m.trim()))
            });
            assert!(
                found,
                "{name}{{{selector}}} of `{expr}` is not exported:\n{metrics}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 6, "{checked}");
    // A reader serving the version CURRENT names is not behind.
    assert!(
        samples.contains(&"snapkv_sync_behind_seconds{dataset=\"d\"} 0.0"),
        "{metrics}"
    );
}
