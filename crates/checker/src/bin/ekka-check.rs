//! `ekka-check replay FILE [--budget STEPS]`: re-checks a history saved by the checker runner
//! (`tests/checker.rs`). Exit 0: every check passed; 1: a violation; 2: usage or unreadable
//! file; 3: no violation found, but a check could not decide (its search ran past the budget).

use std::path::Path;
use std::process::ExitCode;

const USAGE: &str = "usage: ekka-check replay FILE [--budget STEPS]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (file, budget) = match parse(&args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let h = match ekka_checker::History::load(Path::new(&file)) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(seed) = h.seed {
        println!("seed {seed}, {} nodes", h.nodes);
    }
    println!("{}", h.summary());
    for f in &h.faults {
        println!(
            "fault {:.3}s..{:.3}s {}",
            f.start_us as f64 / 1e6,
            f.end_us as f64 / 1e6,
            f.what
        );
    }
    let report = ekka_checker::check(&h, budget);
    print!("{report}");
    if report.has_violation() {
        ExitCode::from(1)
    } else if !report.passed() {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

fn parse(args: &[String]) -> Result<(String, u64), String> {
    let mut budget = ekka_checker::DEFAULT_BUDGET_PER_KEY;
    let mut file = None;
    let mut it = args.iter();
    match it.next().map(String::as_str) {
        Some("replay") => {}
        Some(other) => return Err(format!("unknown command {other:?}")),
        None => return Err("no command".into()),
    }
    while let Some(a) = it.next() {
        match a.as_str() {
            "--budget" => {
                let v = it.next().ok_or("--budget needs a number")?;
                budget = v
                    .parse()
                    .map_err(|_| format!("--budget {v:?} is not a number"))?;
            }
            _ if file.is_none() => file = Some(a.clone()),
            _ => return Err(format!("unexpected argument {a:?}")),
        }
    }
    Ok((file.ok_or("no FILE")?, budget))
}
