//! `kiln chat` end to end on the bundled arithmetic model: `-p` prints a right answer with the
//! default sampling flags, an interactive session on stdin keeps its conversation (and /reset,
//! /system), `kiln bench llm` runs on random weights of a tiny config, `--max-vram` refuses a
//! chat that cannot fit before loading it, and bad input exits non-zero with a message naming what
//! was wrong.

use std::io::Write;
use std::process::{Command, Stdio};

fn kiln() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.env_remove("KILN_DEVICE");
    cmd.args(["--device", "cpu"]);
    cmd
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = kiln().args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn chat_answers_a_question_of_the_bundled_domain() {
    for (question, answer) in [
        ("What is 7 plus 5?", "7 plus 5 is 12."),
        ("What is 9 - 4?", "9 minus 4 is 5."),
        ("Compute 6 times 7.", "6 times 7 is 42."),
    ] {
        let (ok, stdout, stderr) = run(&["chat", "-p", question, "-s", "1"]);
        assert!(ok, "{stderr}");
        assert_eq!(stdout.trim(), answer, "{question}");
        assert!(stderr.contains("tok/s"), "{stderr}");
    }
}

#[test]
fn interactive_chat_keeps_the_conversation() {
    let mut child = kiln()
        .args(["chat", "--temp", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"What is 2 plus 3?\nWhat is 4 times 2?\n/reset\n/system Be brief.\nhow much is 6 minus 1?\n/exit\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let replies: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(
        replies,
        ["2 plus 3 is 5.", "4 times 2 is 8.", "6 minus 1 is 5."]
    );
    // The second turn ran only its new tokens, not the first turn again.
    let runs: Vec<(usize, usize)> = stderr
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("prompt: ")?;
            let total: usize = rest.split(' ').next()?.parse().ok()?;
            let run: usize = rest.split('(').nth(1)?.split(' ').next()?.parse().ok()?;
            Some((total, run))
        })
        .collect();
    assert_eq!(runs.len(), 3, "{stderr}");
    assert!(runs[1].1 < runs[1].0 / 2, "second turn {:?}", runs[1]);
    assert!(stderr.contains("conversation cleared"), "{stderr}");
}

#[test]
fn bench_llm_runs_on_random_weights_and_refuses_a_budget_it_cannot_meet() {
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/llm/mistral-gqa/config.json"
    );
    let json = std::env::temp_dir().join(format!("kiln-bench-llm-{}.json", std::process::id()));
    let (ok, stdout, stderr) = run(&[
        "bench",
        "llm",
        "--random",
        config,
        "--weight-type",
        "q8_0",
        "--prefill",
        "7,33",
        "--depths",
        "0,40",
        "--decode-tokens",
        "4",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("prefill     33 tokens") && stdout.contains("depth     40"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["prefill"].as_array().unwrap().len(), 2);
    assert_eq!(report["decode"][1]["depth"], 40);
    assert!(report["decode"][0]["tokens_per_second"].as_f64().unwrap() > 0.0);
    std::fs::remove_file(json).ok();

    let small = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../benches/configs/mistral-small-3.1-24b.json"
    );
    let (ok, _, stderr) = run(&[
        "bench",
        "llm",
        "--random",
        small,
        "--max-vram",
        "8G",
        "--plan",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("needs at least") && stderr.contains("GiB"),
        "{stderr}"
    );
}

#[test]
fn max_vram_refuses_a_chat_that_cannot_fit_and_caps_the_default_context() {
    // The bundled model's f32 weights alone are ~3.6 MiB: 1M cannot hold them. Nothing loads and
    // nothing reaches stdout; the error names the least the chat needs.
    let (ok, stdout, stderr) = run(&["chat", "-p", "What is 7 plus 5?", "--max-vram", "1M"]);
    assert!(!ok, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("--max-vram")
            && stderr.contains("needs at least")
            && stderr.contains("MiB"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // 6M holds the weights and a few hundred tokens, not the model's 512: the default context is
    // capped and the chat answers; asking for all 512 is refused.
    let (ok, stdout, stderr) = run(&[
        "chat",
        "-p",
        "What is 7 plus 5?",
        "--temp",
        "0",
        "--max-vram",
        "6M",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "7 plus 5 is 12.");
    assert!(
        stderr.contains("capped to fit --max-vram 6.00 MiB"),
        "{stderr}"
    );
    let (ok, stdout, stderr) = run(&["chat", "-p", "hi", "--max-vram", "6M", "-c", "512"]);
    assert!(!ok && stdout.is_empty(), "{stdout}{stderr}");
    assert!(
        stderr.contains("needs at least") && stderr.contains("512 tokens"),
        "{stderr}"
    );
}

#[test]
fn bad_input_is_named() {
    let cases: [(&[&str], &str); 5] = [
        (&["chat", "-m", "/no/such/model", "-p", "hi"], "config.json"),
        (&["chat", "-p", "hi", "--kv-type", "f8"], "--kv-type"),
        (
            &["chat", "-p", "hi", "--chat-template", "/no/such.jinja"],
            "chat template",
        ),
        (&["chat", "-p", "hi", "--temp=-1"], "temperature"),
        (
            &["chat", "-p", "hi", "--max-tokens", "1000"],
            "context of 512",
        ),
    ];
    for (args, needle) in cases {
        let (ok, _, stderr) = run(args);
        assert!(!ok, "{args:?} succeeded");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// `--json-schema FILE` and `--json`: the reply is JSON that follows the schema, at temperature 1
/// as at 0; a missing file, bad JSON or an unsupported schema exits non-zero naming it.
#[test]
fn json_schema_and_json_constrain_the_reply() {
    let dir = std::env::temp_dir().join(format!("kiln-chat-json-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let schema = dir.join("sum.json");
    std::fs::write(
        &schema,
        r#"{"type": "object", "properties": {"sum": {"type": "integer", "minimum": 0, "maximum": 99},
            "op": {"enum": ["plus", "minus", "times"]}}, "required": ["sum", "op"]}"#,
    )
    .unwrap();
    let schema = schema.to_str().unwrap();
    for temp in ["0", "1"] {
        let args = [
            "chat",
            "-p",
            "What is 7 plus 5?",
            "--json-schema",
            schema,
            "--temp",
            temp,
            "-s",
            "3",
        ];
        let (ok, stdout, stderr) = run(&args);
        assert!(ok, "{stderr}");
        let v: serde_json::Value = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("temp {temp}: {e}: {stdout}"));
        assert!(v["sum"].as_u64().is_some_and(|n| n <= 99), "{v}");
        assert!(
            ["plus", "minus", "times"].contains(&v["op"].as_str().unwrap()),
            "{v}"
        );
        assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
        assert!(stderr.contains("finish stop"), "{stderr}");
    }
    let (ok, stdout, stderr) = run(&["chat", "-p", "Hi", "--json", "-n", "60", "-s", "1"]);
    assert!(ok, "{stderr}");
    assert!(stdout.trim_start().starts_with('{'), "{stdout}");

    let bad_json = dir.join("bad.json");
    std::fs::write(&bad_json, "{\"type\": ").unwrap();
    let unsupported = dir.join("unsupported.json");
    std::fs::write(&unsupported, r#"{"type": "nonsense"}"#).unwrap();
    let cases = [
        ("/no/such/schema.json".to_string(), "cannot read"),
        (bad_json.to_str().unwrap().to_string(), "not valid JSON"),
        (unsupported.to_str().unwrap().to_string(), "nonsense"),
    ];
    for (file, needle) in cases {
        let (ok, _, stderr) = run(&["chat", "-p", "hi", "--json-schema", &file]);
        assert!(!ok, "{file} succeeded");
        assert!(
            stderr.contains(needle) && stderr.contains("--json-schema"),
            "{file}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{file}: {stderr}");
    }
    std::fs::remove_dir_all(dir).ok();
}

fn vision_fixture() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llm/mistral3-vision")
}

/// `kiln chat --image` on the tiny random Mistral3 fixture prints the reply whose ids are
/// transformers' 16 greedy tokens (tools/make_vision_fixtures.py, case "one").
#[test]
fn chat_with_an_image_gives_the_transformers_greedy_reply() {
    let dir = vision_fixture();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    let greedy: Vec<u32> = manifest["one"]["greedy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let tokenizer = kiln_llm::Tokenizer::from_dir(&dir).unwrap();
    let want = tokenizer.decode(&greedy, true).unwrap();
    let model = dir.to_str().unwrap();
    let image = dir.join("image_70x130.png");
    // The question about the picture, answered greedily in 16 tokens.
    let ask = [
        "--image",
        image.to_str().unwrap(),
        "-p",
        "What is in this picture?",
        "--temp",
        "0",
        "-n",
        "16",
    ];
    let (ok, stdout, stderr) =
        run(&[&["chat", "-m", model][..], &ask, &["--weight-type", "f32"]].concat());
    assert!(ok, "{stderr}");
    assert_eq!(stdout.strip_suffix('\n').unwrap(), want);
    assert!(stderr.contains("reply: 16 tokens"), "{stderr}");

    // The same model as llama.cpp's GGUF text file plus its mmproj file.
    let text_gguf = dir.join("text-f32.gguf");
    let mmproj = dir.join("mmproj-f32.gguf");
    let gguf = [
        "chat",
        "-m",
        text_gguf.to_str().unwrap(),
        "--mmproj",
        mmproj.to_str().unwrap(),
    ];
    let (ok, stdout, stderr) = run(&[&gguf[..], &ask].concat());
    assert!(ok, "{stderr}");
    assert_eq!(stdout.strip_suffix('\n').unwrap(), want, "--mmproj");
    let (ok, stdout, _) = run(&[&gguf[..], &["--plan", "-c", "256"]].concat());
    assert!(ok && stdout.contains("vision encoder"), "{stdout}");

    // Bad images: named, non-zero, nothing printed.
    let text_file =
        std::env::temp_dir().join(format!("kiln-not-an-image-{}.png", std::process::id()));
    std::fs::write(&text_file, "hello").unwrap();
    let png = std::fs::read(&image).unwrap();
    let truncated = std::env::temp_dir().join(format!("kiln-truncated-{}.png", std::process::id()));
    std::fs::write(&truncated, &png[..png.len() / 2]).unwrap();
    for (file, model, needle) in [
        (
            "/no/such/image.png".into(),
            model.to_string(),
            "cannot read",
        ),
        (
            text_file.clone(),
            model.to_string(),
            "not a PNG, JPEG or WebP",
        ),
        (truncated.clone(), model.to_string(), "kiln-truncated"),
        (image.clone(), String::new(), "no vision encoder"),
    ] {
        let mut args = vec!["chat", "-p", "hi", "--image", file.to_str().unwrap()];
        if !model.is_empty() {
            args.extend(["-m", model.as_str()]);
        }
        let (ok, stdout, stderr) = run(&args);
        assert!(!ok, "{file:?} succeeded");
        assert!(stdout.is_empty(), "{stdout}");
        assert!(stderr.contains(needle), "{file:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    std::fs::remove_file(text_file).ok();
    std::fs::remove_file(truncated).ok();
}

fn gguf_fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/llm/gguf")
        .join(name)
}

/// `kiln chat -m FILE.gguf` on llama.cpp conversions of tiny random models
/// (tools/make_gguf_llm_fixtures.py): the Tekken file prints the same greedy reply as the folder
/// it was converted from, and both are llama.cpp's 16 greedy tokens; so is the SentencePiece
/// file's reply (whose folder has no tokenizer kiln reads: a tokenizer.model only).
#[test]
fn chat_on_a_gguf_file_replies_as_its_folder_and_llama_cpp() {
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(gguf_fixture("llama_cpp.json")).unwrap())
            .unwrap();
    let chat = |model: &std::path::Path| {
        let (ok, stdout, stderr) = run(&[
            "chat",
            "-m",
            model.to_str().unwrap(),
            "-p",
            "Hello, how are you?",
            "--temp",
            "0",
            "-n",
            "16",
        ]);
        assert!(ok, "{}: {stderr}", model.display());
        assert!(stderr.contains("reply: 16 tokens"), "{stderr}");
        stdout.strip_suffix('\n').unwrap().to_string()
    };
    for (model, folder) in [("tekken", Some("tekken")), ("spm", None)] {
        let file = gguf_fixture(&format!("{model}-f32.gguf"));
        let reply = chat(&file);
        if let Some(folder) = folder {
            assert_eq!(reply, chat(&gguf_fixture(folder)), "{model}");
        }
        let greedy: Vec<u32> = record[model]["greedy"]["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let gguf = kiln_runtime::gguf::GgufFile::open(&file).unwrap();
        let tokenizer = kiln_llm::Tokenizer::from_gguf(&gguf).unwrap();
        assert_eq!(reply, tokenizer.decode(&greedy, true).unwrap(), "{model}");
        assert!(!reply.trim().is_empty(), "{model}");
    }
    // --plan counts a GGUF's packed weights as they load (Q8_0 here, whatever --weight-type).
    let (ok, stdout, stderr) = run(&[
        "chat",
        "-m",
        gguf_fixture("tekken-q8_0.gguf").to_str().unwrap(),
        "--plan",
    ]);
    assert!(
        ok && stdout.contains("(q8_0)") && stdout.contains("512 tokens"),
        "{stdout}{stderr}"
    );
    // The Q8_0 file runs too (its reply may differ: weights rounded to 8 bits).
    let (ok, _, stderr) = run(&[
        "chat",
        "-m",
        gguf_fixture("tekken-q8_0.gguf").to_str().unwrap(),
        "-p",
        "Hi",
        "--temp",
        "0",
        "-n",
        "4",
    ]);
    assert!(ok && stderr.contains("reply: 4 tokens"), "{stderr}");
    // A GGUF that is not a file kiln can run fails naming it.
    let dir = std::env::temp_dir().join(format!("kiln-cli-gguf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("broken.gguf");
    let bytes = std::fs::read(gguf_fixture("tekken-f32.gguf")).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() / 3]).unwrap();
    let (ok, stdout, stderr) = run(&["chat", "-m", bad.to_str().unwrap(), "-p", "Hi"]);
    assert!(!ok && stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("broken.gguf") && stderr.contains("truncated"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    std::fs::remove_dir_all(dir).ok();
}

/// `kiln chat -m FILE.gguf` on a Q4_K_M file llama.cpp's own tools made
/// (tests/fixtures/llm/gguf-quant, tools/make_gguf_quant_crosscheck.py) prints the reply whose ids
/// are llama-server's first 16 greedy tokens on that file (kiln's first divergence from them is at
/// step 26, a near-tie: llm/tests/gguf_llama_cpp.rs), with the prompt counted as llama-server did.
#[test]
fn chat_on_a_llama_cpp_q4_k_m_file_gives_llama_cpps_tokens() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llm/gguf-quant");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("llama_cpp.json")).unwrap())
            .unwrap();
    let file = dir.join("q4_k_m.gguf");
    let ids: Vec<u32> = record["files"]["q4_k_m.gguf"]["ids"]
        .as_array()
        .unwrap()
        .iter()
        .take(16)
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let tokenizer =
        kiln_llm::Tokenizer::from_gguf(&kiln_runtime::gguf::GgufFile::open(&file).unwrap())
            .unwrap();
    let want = tokenizer.decode(&ids, true).unwrap();
    let prompt = record["chat"]["messages"][0]["content"].as_str().unwrap();
    let (ok, stdout, stderr) = run(&[
        "chat",
        "-m",
        file.to_str().unwrap(),
        "-p",
        prompt,
        "--temp",
        "0",
        "-n",
        "16",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.strip_suffix('\n').unwrap(), want);
    let prompt_tokens = record["chat"]["ids"].as_array().unwrap().len();
    assert!(
        stderr.contains(&format!("prompt: {prompt_tokens} tokens")),
        "{stderr}"
    );
}
