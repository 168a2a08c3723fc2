//! `bench/compare.sh` works: its smoke run (each workload once, 5 s,
//! against Rill only) drives this build's server with the official
//! `s2 bench` and `rill bench` (many streams, fan-out, collections) and writes tables
//! with a figure in every cell. The figures
//! themselves come from the full run, never from a test.

mod common;

use common::s2_cli::s2_binary;

#[test]
fn the_comparison_script_runs_every_workload() {
    let Some(s2) = s2_binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("RESULTS.md");
    let root = env!("CARGO_MANIFEST_DIR");
    let run = std::process::Command::new("bash")
        .arg(format!("{root}/bench/compare.sh"))
        .arg("--smoke")
        .args(["--rill", env!("CARGO_BIN_EXE_rill")])
        .arg("--out")
        .arg(&out)
        .env("S2_CLI", &s2)
        .output()
        .expect("bash runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "compare.sh failed:\n{stderr}");
    let table = std::fs::read_to_string(&out).expect("the results file was written");

    // One table per record size, a row per target rate; every figure there.
    for size in ["## 1 KiB records", "## 8 KiB records"] {
        assert!(table.contains(size), "no {size} table:\n{table}");
    }
    let rows: Vec<Vec<&str>> = table
        .lines()
        .filter(|line| line.starts_with("| 5 |") || line.starts_with("| flat out |"))
        .map(|line| line.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    assert_eq!(rows.len(), 4, "two rates for each of two sizes:\n{table}");
    for row in &rows {
        // rate, written, ack p50, ack p99, e2e p50, e2e p99, catch-up
        assert_eq!(row.len(), 7, "{row:?}");
        for cell in &row[1..] {
            let figure: f64 = cell
                .parse()
                .unwrap_or_else(|_| panic!("not a figure: {cell:?} in {row:?}\n{stderr}"));
            assert!(figure > 0.0, "{row:?}");
        }
    }
    // At 5 MiB/s, about 5 MiB/s written.
    let written: f64 = rows[0][1].parse().unwrap();
    assert!((4.0..6.0).contains(&written), "{:?}", rows[0]);
    // Many streams and fan-out: a row per count, each with three figures.
    for (title, counts) in [
        ("spread over many streams", ["1", "100"]),
        ("Fan-out", ["1", "10"]),
    ] {
        let section = table
            .split("## ")
            .find(|section| section.contains(title))
            .unwrap_or_else(|| panic!("no table for {title}:\n{table}"));
        for count in counts {
            let row = section
                .lines()
                .find(|line| line.starts_with(&format!("| {count} |")))
                .unwrap_or_else(|| panic!("no row for {count} in {title}:\n{table}"));
            let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
            assert_eq!(cells.len(), 4, "{row}");
            for cell in &cells[1..] {
                let figure: f64 = cell
                    .parse()
                    .unwrap_or_else(|_| panic!("not a figure: {row}"));
                assert!(figure > 0.0, "{row}");
            }
        }
    }
    // Collections and consumers: one row, five figures.
    let section = table
        .split("## ")
        .find(|section| section.starts_with("Collections and consumers"))
        .unwrap_or_else(|| panic!("no collections table:\n{table}"));
    let row = section
        .lines()
        .filter(|line| line.starts_with("| "))
        .nth(1)
        .unwrap_or_else(|| panic!("no collections row:\n{table}"));
    let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
    assert_eq!(cells.len(), 5, "{row}");
    for cell in &cells {
        let figure: f64 = cell
            .parse()
            .unwrap_or_else(|_| panic!("not a figure: {row}"));
        assert!(figure > 0.0, "{row}");
    }
    assert!(
        table.contains("Highest rate on the ladder"),
        "no sustained-rate line:\n{table}"
    );
}
