//! `ekka-check replay FILE`: exit 0 for a good history, 1 for a violation, 2 for a bad file.

use std::process::Command;

use ekka_checker::{Call, History, Op, Outcome, Ret};

fn op(invoke_us: u64, complete_us: u64, call: Call, ret: Ret) -> Op {
    Op {
        client: 1,
        node: "n1".into(),
        invoke_us,
        complete_us: Some(complete_us),
        call,
        outcome: Outcome::Ok { ret },
    }
}

/// A put acknowledged at revision 100, then a read that sees `seen`.
fn history(seen: Option<&str>) -> History {
    let put = Call::Put {
        key: "k".into(),
        value: "a".into(),
    };
    let read = Ret::Read {
        value: seen.map(String::from),
        rev: seen.map(|_| 100),
    };
    History {
        seed: Some(1),
        nodes: 3,
        ops: vec![
            op(0, 10, put, Ret::Written { rev: 100 }),
            op(20, 30, Call::Get { key: "k".into() }, read),
        ],
        ..History::default()
    }
}

fn replay(h: Option<&History>, name: &str) -> (i32, String) {
    let path = std::env::temp_dir().join(format!("ekka-check-{}-{name}.json", std::process::id()));
    match h {
        Some(h) => h.save(&path).unwrap(),
        None => std::fs::write(&path, "{ not a history").unwrap(),
    }
    let out = Command::new(env!("CARGO_BIN_EXE_ekka-check"))
        .arg("replay")
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn replay_passes_a_good_history_and_fails_a_lost_write() {
    let (code, text) = replay(Some(&history(Some("a"))), "good");
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("PASS     key k: linearizable"), "{text}");
    let (code, text) = replay(Some(&history(None)), "lost");
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("VIOLATED no acknowledged write lost"),
        "{text}"
    );
    let (code, text) = replay(None, "broken");
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("not a history"), "{text}");
}
