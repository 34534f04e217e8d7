//! natter's alert rules and dashboard (deploy/): promtool checks the rules and runs their
//! unit tests (each alert fires on its condition and stays quiet short of it), every alert
//! links to its section of docs/operations.md, and the dashboard is a Grafana dashboard of
//! natter's metrics. That the metrics exist with these names is checked against a running
//! stack in compose.rs.

use std::path::Path;
use std::process::Command;

use testkit::compose::{ROOT, installed};

/// A file of the repository.
fn repo_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn run_promtool(args: &[&str]) -> String {
    let out = Command::new(installed("NATTER_PROMTOOL", "promtool"))
        .args(args)
        .current_dir(Path::new(ROOT).join("deploy/prometheus"))
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool ({e}): run scripts/install-deps tests, which installs it")
        });
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn the_rules_are_valid_and_their_unit_tests_pass() {
    run_promtool(&["check", "rules", "natter-rules.yml"]);
    let text = run_promtool(&["test", "rules", "natter-rules.test.yml"]);
    assert!(text.contains("SUCCESS"), "{text}");
}

/// The rules file's alerts: (name, runbook_url).
fn alerts() -> Vec<(String, String)> {
    let text = repo_file("deploy/prometheus/natter-rules.yml");
    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("rules YAML");
    rules["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").clone())
        .map(|r| {
            let name = r["alert"].as_str().expect("alert name").to_string();
            let url = r["annotations"]["runbook_url"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} has no runbook_url"))
                .to_string();
            (name, url)
        })
        .collect()
}

#[test]
fn every_alert_links_to_its_section_of_the_runbook() {
    let doc = repo_file("docs/operations.md");
    let alerts = alerts();
    assert!(alerts.len() >= 10, "{alerts:?}");
    for (name, url) in alerts {
        assert_eq!(
            url,
            format!("docs/operations.md#{}", name.to_lowercase()),
            "{name}"
        );
        assert!(
            doc.lines().any(|l| l == format!("#### {name}")),
            "docs/operations.md has no section for {name}"
        );
    }
}

#[test]
fn every_alert_has_a_unit_test() {
    let tests = repo_file("deploy/prometheus/natter-rules.test.yml");
    for (name, _) in alerts() {
        assert!(
            tests.contains(&format!("alertname: {name}")),
            "natter-rules.test.yml does not test {name}"
        );
    }
}

#[test]
fn the_dashboard_is_a_grafana_dashboard_of_natter_metrics() {
    let text = repo_file("deploy/grafana/natter-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    assert_eq!(dashboard["uid"], "natter");
    // Rows may hold their panels inside.
    let panels: Vec<&serde_json::Value> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| {
            let inner = p["panels"]
                .as_array()
                .map(|v| v.iter().collect())
                .unwrap_or(Vec::new());
            std::iter::once(p).chain(inner)
        })
        .collect();
    let mut ids: Vec<i64> = panels.iter().filter_map(|p| p["id"].as_i64()).collect();
    let count = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), count, "panel ids are unique");
    let exprs: Vec<String> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    assert!(exprs.len() >= 20, "{} queries", exprs.len());
    assert!(exprs.iter().all(|e| e.contains("natter_")), "{exprs:?}");
}
