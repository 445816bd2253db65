//! Many clients at once: 20 streams against 4 slots and a queue of 8 all get an answer (200 or
//! 503 with Retry-After), never hang, and each 200 stream is exactly its own reply; a client that
//! goes away mid-stream frees its slot; `--timeout` stops a long reply.

use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

/// A sampled, seeded request whose reply runs to `max_tokens` (EOS banned).
fn long_request(seed: u64, max_tokens: usize, stream: bool) -> Value {
    json!({
        "model": CHAT,
        "messages": [{"role": "user", "content": format!("Tell me about cats, {seed}.")}],
        "temperature": 1.0,
        "seed": seed,
        "max_tokens": max_tokens,
        "logit_bias": {"2": -100},
        "stream": stream,
    })
}

/// The SSE body's content deltas joined, and the chunk ids seen.
fn read_stream(body: &str) -> (String, Vec<String>, bool) {
    let (mut text, mut ids, mut done) = (String::new(), Vec::new(), false);
    for line in body.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let chunk: Value = serde_json::from_str(data).unwrap();
        assert!(chunk.get("error").is_none(), "stream error: {chunk}");
        ids.push(chunk["id"].as_str().unwrap().to_string());
        for c in chunk["choices"].as_array().unwrap() {
            text.push_str(c["delta"]["content"].as_str().unwrap_or_default());
        }
    }
    (text, ids, done)
}

/// Question `i`, answered greedily: 20 different answers, so a mixed stream shows.
fn question(i: u64, stream: bool) -> Value {
    json!({
        "model": CHAT,
        "messages": [{"role": "user", "content": format!("What is {i} plus {}?", i % 7)}],
        "temperature": 0,
        "max_tokens": 24,
        "stream": stream,
    })
}

#[test]
fn twenty_streams_four_slots_queue_of_eight() {
    let mut config = config(4);
    config.queue_size = 8;
    let server = start(config);
    let url = format!("{}/v1/chat/completions", server.url());
    let started = Instant::now();
    let handles: Vec<_> = (0..20u64)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let r = http().post(&url).json(&question(i, true)).send().unwrap();
                let status = r.status().as_u16();
                let retry = r.headers().get("retry-after").is_some();
                (i, status, retry, r.text().unwrap())
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "requests hung"
    );
    let ok: Vec<_> = results.iter().filter(|r| r.1 == 200).collect();
    for (i, status, retry, body) in &results {
        assert!(
            *status == 200 || *status == 503,
            "request {i}: {status} {body}"
        );
        if *status == 503 {
            assert!(retry, "503 without Retry-After");
            let e: Value = serde_json::from_str(body).unwrap();
            assert_eq!(e["error"]["code"], "queue_full");
        }
    }
    assert!(ok.len() >= 4, "only {} of 20 served", ok.len());
    // Each stream is its own reply: one id throughout, and its own question's answer.
    for (i, _, _, body) in ok {
        let (text, ids, done) = read_stream(body);
        assert!(done, "stream {i} ended without [DONE]");
        assert!(ids.windows(2).all(|w| w[0] == w[1]), "stream {i} mixed ids");
        let (status, alone) = post_raw(
            &server,
            "/v1/chat/completions",
            &question(*i, false).to_string(),
        );
        assert_eq!(status, 200);
        let answer = alone["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(answer.starts_with(&format!("{i} plus ")), "{answer}");
        assert_eq!(text, answer, "stream {i}");
    }
    let health: Value = get_json(&server, "/health");
    assert_eq!(health["queue"]["running_jobs"], 0);
}

fn metric(server: &kiln_server::Server, name: &str) -> f64 {
    let text = get_text(server, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// A client that reads one chunk and hangs up: its reply stops early (fewer tokens than asked
/// are generated) and the slot serves the next request.
#[test]
fn a_client_that_disconnects_frees_its_slot() {
    // The whole context (512 positions) so the reply would run long enough to outlast the
    // disconnect's detection by a wide margin on a fast machine.
    let mut config = config(1);
    config.llm.ctx_size = Some(512);
    let server = start(config);
    let url = format!("{}/v1/chat/completions", server.url());
    let max = 480;
    let response = http()
        .post(&url)
        .json(&long_request(1, max, true))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let mut reader = BufReader::new(response);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("data: "), "{line}");
    drop(reader);
    let end = Instant::now() + Duration::from_secs(30);
    while metric(&server, "kiln_replies_total") < 1.0 {
        assert!(Instant::now() < end, "the reply never ended");
        std::thread::sleep(Duration::from_millis(10));
    }
    let generated = metric(&server, "kiln_tokens_generated_total");
    assert!(
        generated < max as f64,
        "generated {generated} of {max}: not stopped"
    );
    let (status, body) = post_raw(
        &server,
        "/v1/chat/completions",
        &long_request(2, 8, false).to_string(),
    );
    assert_eq!(status, 200, "{body}");
}

/// --timeout: a reply still running at the deadline stops; the request gets a 504 (or, streamed,
/// an error event before the end).
#[test]
fn the_timeout_stops_a_long_reply() {
    let mut config = config(1);
    config.timeout = Some(Duration::from_millis(30));
    config.llm.ctx_size = Some(512);
    let server = start(config);
    let (status, body) = post_raw(
        &server,
        "/v1/chat/completions",
        &long_request(3, 480, false).to_string(),
    );
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "timeout");
    let mut response = http()
        .post(format!("{}/v1/chat/completions", server.url()))
        .json(&long_request(4, 480, true))
        .send()
        .unwrap();
    let mut text = String::new();
    response.read_to_string(&mut text).unwrap();
    assert!(text.contains("\"timeout\""), "{text}");
    assert!(!text.contains("[DONE]"));
    assert!(metric(&server, "kiln_tokens_generated_total") < 960.0);
}
