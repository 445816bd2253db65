//! The queue under load, cancellation by disconnect, interrupt, skip and the SSE progress stream.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use kiln_models::image::png::decode_png;
use kiln_server::Server;
use serde_json::{json, Value};

use crate::common::*;

/// Steps of a job that would run for minutes: long enough that finishing early proves it was
/// stopped.
const LONG: u32 = 1000;

fn long_config() -> kiln_server::ServerConfig {
    let mut c = config();
    c.max_steps = 10_000;
    c
}

/// Sends a txt2img request on a raw connection and returns it unread, so the test can drop it.
fn raw_request(server: &Server, body: &Value) -> TcpStream {
    let body = body.to_string();
    let mut s = TcpStream::connect(server.addr()).unwrap();
    write!(
        s,
        "POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: kiln\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s.flush().unwrap();
    s
}

#[test]
fn twenty_concurrent_requests_with_a_queue_of_eight() {
    let mut c = config();
    c.queue_size = 8;
    let server = Arc::new(start(c));
    let barrier = Arc::new(Barrier::new(20));
    let threads: Vec<_> = (0..20)
        .map(|i| {
            let (server, barrier) = (server.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let r = post(
                    &server,
                    "/sdapi/v1/txt2img",
                    &small(&format!("prompt {i}"), 6),
                );
                let status = r.status().as_u16();
                let retry = r
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string());
                let body: Value = r.json().unwrap();
                (status, retry, body)
            })
        })
        .collect();
    let results: Vec<(u16, Option<String>, Value)> =
        threads.into_iter().map(|t| t.join().unwrap()).collect();
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let busy = results.iter().filter(|r| r.0 == 503).count();
    assert_eq!(
        ok + busy,
        20,
        "statuses: {:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    // At least a full queue's worth was accepted (nine when the worker took the first job off the
    // queue before the burst ended, eight when the whole burst arrived first); the rest could not
    // all fit.
    assert!(ok >= 8, "only {ok} answered 200");
    assert!(busy >= 1, "no request was refused");
    for (status, retry, body) in &results {
        if *status == 200 {
            assert_eq!(body["images"].as_array().unwrap().len(), 1);
        } else {
            assert_eq!(retry.as_deref(), Some("5"));
            assert_eq!(body["error"], "queue_full");
        }
    }
    // Still serving.
    assert_eq!(health(&server)["queue"]["waiting"], 0);
    assert_eq!(
        post_json(&server, "/sdapi/v1/txt2img", &small("after", 1)).0,
        200
    );
}

#[test]
fn disconnecting_cancels_the_running_and_the_queued_job() {
    let server = start(long_config());
    let events = collect_events(&server, 2);
    let running = raw_request(&server, &small("long", LONG));
    wait_for(60, "the first job to start stepping", || step(&server) >= 1);
    let queued = raw_request(&server, &small("queued", LONG));
    wait_for(10, "the second job to queue", || {
        health(&server)["queue"]["waiting"] == 1
    });

    drop(queued);
    wait_for(10, "the queued job to leave the queue", || {
        health(&server)["queue"]["waiting"] == 0
    });
    assert_eq!(health(&server)["queue"]["running"], true);

    let t = Instant::now();
    drop(running);
    wait_for(20, "the running job to stop", || {
        health(&server)["queue"]["running"] == false
    });
    assert!(t.elapsed() < Duration::from_secs(20));
    assert!(step(&server) == 0);
    // And the worker takes new work.
    assert_eq!(
        post_json(&server, "/sdapi/v1/txt2img", &small("next", 1)).0,
        200
    );

    // The long job ended cancelled well before its last step; the queued one never started.
    let events = events.join().unwrap();
    let ends: Vec<&Value> = events
        .iter()
        .filter(|(k, _)| k == "end")
        .map(|(_, e)| e)
        .collect();
    assert_eq!(ends[0]["status"], "cancelled");
    assert_eq!(ends[1]["status"], "done");
    let starts = events.iter().filter(|(k, _)| k == "start").count();
    assert_eq!(starts, 2);
    let last_step = events
        .iter()
        .filter(|(_, e)| e["total"] == LONG)
        .map(|(_, e)| e["step"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(
        last_step < u64::from(LONG),
        "the cancelled job ran to {last_step}"
    );
}

/// Reads the SSE stream on a thread until `ends` jobs have ended; returns (event, data) pairs.
fn collect_events(server: &Server, ends: usize) -> std::thread::JoinHandle<Vec<(String, Value)>> {
    let stream = client()
        .get(format!("{}/sdapi/v1/progress/stream", server.url()))
        .send()
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(stream.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    std::thread::spawn(move || {
        let mut events = Vec::new();
        let mut kind = String::new();
        let mut seen = 0;
        for line in BufReader::new(stream).lines() {
            let line = line.unwrap();
            if let Some(k) = line.strip_prefix("event: ") {
                kind = k.to_string();
            } else if let Some(d) = line.strip_prefix("data: ") {
                events.push((kind.clone(), serde_json::from_str(d).unwrap()));
                if kind == "end" {
                    seen += 1;
                    if seen == ends {
                        break;
                    }
                }
            }
        }
        events
    })
}

#[test]
fn interrupt_returns_what_the_job_has() {
    let server = Arc::new(start(long_config()));
    let s = server.clone();
    let job = std::thread::spawn(move || post_json(&s, "/sdapi/v1/txt2img", &small("long", LONG)));
    wait_for(60, "the job to step", || step(&server) >= 2);
    let (status, ack) = post_json(&server, "/sdapi/v1/interrupt", &json!({}));
    assert_eq!((status, ack), (200, json!({})));
    let (status, body) = job.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["images"].as_array().unwrap().len(), 1);
    let info: Value = serde_json::from_str(body["info"].as_str().unwrap()).unwrap();
    assert_eq!(info["interrupted"], true);
    let png = decode_png(&b64decode(body["images"][0].as_str().unwrap())).unwrap();
    assert_eq!((png.image.width, png.image.height), (64, 64));
}

#[test]
fn skip_ends_one_batch_and_the_next_runs() {
    let server = Arc::new(start(long_config()));
    let s = server.clone();
    let mut req = small("two batches", LONG);
    req["n_iter"] = json!(2);
    let job = std::thread::spawn(move || post_json(&s, "/sdapi/v1/txt2img", &req));
    wait_for(60, "the first batch to step", || step(&server) >= 1);
    post_json(&server, "/sdapi/v1/skip", &json!({}));
    wait_for(60, "the second batch to start", || {
        step(&server) > u64::from(LONG)
    });
    let p = get_json(&server, "/sdapi/v1/progress").1;
    assert_eq!(p["state"]["skipped"], true);
    post_json(&server, "/sdapi/v1/interrupt", &json!({}));
    let (status, body) = job.join().unwrap();
    assert_eq!(status, 200, "{body}");
    let info: Value = serde_json::from_str(body["info"].as_str().unwrap()).unwrap();
    assert_eq!(info["all_seeds"], json!([42, 43]));
}

#[test]
fn progress_stream_sends_steps_previews_and_the_end() {
    let mut c = config();
    c.preview_every = 2;
    let server = Arc::new(start(c));
    let events = collect_events(&server, 1);
    let s = server.clone();
    let job = std::thread::spawn(move || post_json(&s, "/sdapi/v1/txt2img", &small("sse", 4)));
    let events = events.join().unwrap();
    assert_eq!(job.join().unwrap().0, 200);
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["start", "step", "step", "step", "step", "end"]);
    assert_eq!(events[5].1["status"], "done");
    for (i, (_, e)) in events[1..5].iter().enumerate() {
        assert_eq!(e["step"], i + 1);
        assert_eq!(e["total"], 4);
        // Previews at steps 2 and 4 only.
        assert_eq!(e.get("preview").is_some(), (i + 1) % 2 == 0, "{e}");
    }
    let preview = decode_png(&b64decode(events[4].1["preview"].as_str().unwrap())).unwrap();
    assert_eq!((preview.image.width, preview.image.height), (64, 64));
    // The last preview stays available to pollers while a job runs; idle now, so none.
    assert_eq!(
        get_json(&server, "/sdapi/v1/progress").1["current_image"],
        Value::Null
    );
}

#[test]
fn dropping_the_server_stops_it_even_with_an_open_event_stream() {
    let server = start(config());
    let addr = server.addr();
    let stream = client()
        .get(format!("{}/sdapi/v1/progress/stream", server.url()))
        .send()
        .unwrap();
    drop(server);
    wait_for(5, "the port to close", || TcpStream::connect(addr).is_err());
    drop(stream);
}
