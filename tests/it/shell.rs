//! The shell's conventions, through the binary: completion scripts, man
//! pages, and what `--help` says about channels and exit codes.

use std::process::Command;

use crate::common::{bin, run};

fn stdout_ok(args: &[&str]) -> String {
    let out = run(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

const COMMANDS: [&str; 7] = [
    "export",
    "sources",
    "send",
    "validate",
    "forget",
    "completions",
    "man",
];

#[test]
fn bash_loads_the_completion_script_and_it_knows_every_command() {
    let script = stdout_ok(&["completions", "bash"]);
    for name in COMMANDS
        .iter()
        .chain(&["--channel", "--nexus-prefix", "telegram"])
    {
        assert!(script.contains(name), "{name} missing from the bash script");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hermes-harvest.bash");
    std::fs::write(&path, &script).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg("source \"$1\" && complete -p hermes-harvest")
        .arg("bash")
        .arg(&path)
        .output()
        .expect("bash");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let registered = String::from_utf8_lossy(&out.stdout);
    assert!(
        registered.trim_end().ends_with(" hermes-harvest"),
        "{registered}"
    );
}

#[test]
fn zsh_fish_elvish_and_powershell_scripts_name_the_binary() {
    let heads = [
        ("zsh", "#compdef hermes-harvest"),
        ("fish", "complete -c hermes-harvest"),
        ("elvish", "edit:completion:arg-completer[hermes-harvest]"),
        ("powershell", "Register-ArgumentCompleter"),
    ];
    for (shell, head) in heads {
        let script = stdout_ok(&["completions", shell]);
        assert!(script.contains(head), "{shell}: {head} missing");
        assert!(
            script.contains("nexus-prefix"),
            "{shell}: export's flags missing"
        );
    }
    assert_eq!(run(&["completions", "tcsh"]).status.code(), Some(2));
}

#[test]
fn the_man_page_lists_every_command_and_every_exit_code() {
    let page = stdout_ok(&["man"]);
    assert!(page.contains(".TH hermes-harvest 1"), "{page}");
    for name in COMMANDS {
        assert!(
            page.contains(&format!("hermes\\-harvest\\-{name}(1)")),
            "{name}"
        );
    }
    assert!(
        !page.contains("harvest\\-help(1)"),
        "no page exists for help"
    );
    let status = page
        .split(".SH \"EXIT STATUS\"\n")
        .nth(1)
        .expect("an EXIT STATUS section");
    for (code, _) in hermes_harvest::exit::TABLE {
        assert!(
            status.contains(&format!(".TP\n{code}\n")),
            "exit code {code}"
        );
    }
}

#[test]
fn man_dir_writes_a_page_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    assert!(stdout_ok(&["man", "--dir", d]).is_empty());
    let top = std::fs::read_to_string(dir.path().join("hermes-harvest.1")).unwrap();
    assert_eq!(top, stdout_ok(&["man"]));
    for name in COMMANDS {
        let page = dir.path().join(format!("hermes-harvest-{name}.1"));
        let text = std::fs::read_to_string(&page).expect("a page per command");
        assert!(
            text.contains(&format!(".TH hermes-harvest-{name} 1")),
            "{name}"
        );
    }
    let export = std::fs::read_to_string(dir.path().join("hermes-harvest-export.1")).unwrap();
    assert!(export.contains("nexus\\-prefix"), "{export}");
    let missing = dir.path().join("not-there");
    let out = run(&["man", "--dir", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!missing.exists());
}

#[test]
fn export_help_gives_each_channel_one_line_and_the_nexus_rule() {
    let out = Command::new(bin())
        .args(["export", "--help"])
        .env_remove("COLUMNS")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let values: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("--channel <"))
        .skip_while(|l| !l.contains("Possible values:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(values.len(), 4, "one line per channel: {values:#?}");
    for (line, channel) in values.iter().zip(["nexus", "telegram", "tui", "other"]) {
        assert!(
            line.trim_start().starts_with(&format!("- {channel}:")),
            "{line}"
        );
    }
    // What makes a session nexus: its source, the id prefix, or its title.
    let nexus = values[0];
    for part in ["Source nexus", "api_server", "--nexus-prefix", "title"] {
        assert!(nexus.contains(part), "{nexus}");
    }
    let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(flat.contains("a telegram or tui source wins over a \"nexus\" title"));
}

#[test]
fn top_level_help_ends_with_every_exit_code() {
    let help = stdout_ok(&["--help"]);
    let codes = help.split("Exit codes:\n").nth(1).expect("exit codes");
    let listed: Vec<u8> = codes
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    let table: Vec<u8> = hermes_harvest::exit::TABLE
        .iter()
        .map(|(c, _)| *c)
        .collect();
    assert_eq!(listed, table);
}
