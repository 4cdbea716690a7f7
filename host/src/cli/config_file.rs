//! `evhost.toml`: defaults for every command-line flag, below environment variables and flags.
//!
//! Top-level keys apply to every subcommand that has the flag (`redis`, `log_format`); a
//! `[run]`, `[publish]`, `[dlq]`, ... table applies to that subcommand (and its own
//! subcommands) only. Keys are flag names with `_` or `-` (`metrics_addr` = `--metrics-addr`).
//! A key that no subcommand knows is an error naming the key and the file.
//!
//! The values are handed to clap as if they were written on the command line before the
//! user's own arguments of that subcommand, so clap validates them and the precedence
//! file < environment < flags holds: a value is taken from the file only when clap would
//! otherwise have used the flag's built-in default.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};

/// The flag that names the configuration file.
pub const CONFIG_ARG: &str = "config";

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("invalid TOML in {path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A key names no flag.
    #[error("unknown key `{key}` in {path}: no `evhost {scope}` flag is called --{flag}")]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key as written, with its table (`run.batchsize`).
        key: String,
        /// The subcommand the key was looked up in (`run`, or `<any subcommand>`).
        scope: String,
        /// The flag the key would stand for.
        flag: String,
    },
    /// A value has a type a flag cannot take (a table, or a date).
    #[error("the value of `{key}` in {path} must be a string, number, boolean or array of them")]
    BadValue {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
}

/// The argument list with the file's values inserted, or `args` unchanged when `matches`
/// names no configuration file.
///
/// `command` is the full command tree and `matches` the result of parsing `args` with it.
///
/// # Errors
///
/// When the file cannot be read or parsed, or has a key that no flag matches.
pub fn apply(
    command: &Command,
    matches: &ArgMatches,
    args: Vec<OsString>,
) -> Result<Vec<OsString>, ConfigFileError> {
    let Some(path) = matches.get_one::<PathBuf>(CONFIG_ARG) else {
        return Ok(args);
    };
    let table = read(path)?;
    let chain = subcommand_chain(command, matches);
    let mut inserts: Vec<Vec<OsString>> = vec![Vec::new(); chain.len()];
    for (key, value) in &table {
        let section = chain
            .iter()
            .position(|level| level.command.get_name() == key.as_str());
        match (value, section) {
            (toml::Value::Table(entries), Some(start)) => {
                for (inner, value) in entries {
                    let full_key = format!("{key}.{inner}");
                    let flag = flag_name(inner);
                    let level = chain[start..]
                        .iter()
                        .position(|level| has_arg(level.command, &flag))
                        .map(|offset| start + offset)
                        .ok_or_else(|| ConfigFileError::UnknownKey {
                            path: path.clone(),
                            key: full_key.clone(),
                            scope: key.clone(),
                            flag: flag.replace('_', "-"),
                        })?;
                    push_flag(
                        &mut inserts[level],
                        &chain[level],
                        &flag,
                        value,
                        path,
                        &full_key,
                    )?;
                }
            }
            (toml::Value::Table(_), None) => {
                if !command.get_subcommands().any(|sub| sub.get_name() == key) {
                    return Err(ConfigFileError::UnknownKey {
                        path: path.clone(),
                        key: key.clone(),
                        scope: "<any subcommand>".into(),
                        flag: key.replace('_', "-"),
                    });
                }
            }
            (value, _) => {
                let flag = flag_name(key);
                if flag == CONFIG_ARG || !tree_has_arg(command, &flag) {
                    return Err(ConfigFileError::UnknownKey {
                        path: path.clone(),
                        key: key.clone(),
                        scope: "<any subcommand>".into(),
                        flag: flag.replace('_', "-"),
                    });
                }
                if let Some(level) = chain.iter().position(|level| has_arg(level.command, &flag)) {
                    push_flag(&mut inserts[level], &chain[level], &flag, value, path, key)?;
                }
            }
        }
    }
    Ok(splice(args, &chain, inserts))
}

/// One level of the parsed subcommand path: the root, `dlq`, `dlq list`, ...
struct Level<'a> {
    command: &'a Command,
    matches: &'a ArgMatches,
}

fn subcommand_chain<'a>(command: &'a Command, matches: &'a ArgMatches) -> Vec<Level<'a>> {
    let mut chain = vec![Level { command, matches }];
    while let Some(last) = chain.last() {
        let Some((name, sub_matches)) = last.matches.subcommand() else {
            break;
        };
        let Some(sub_command) = last.command.find_subcommand(name) else {
            break;
        };
        chain.push(Level {
            command: sub_command,
            matches: sub_matches,
        });
    }
    chain
}

fn read(path: &Path) -> Result<toml::Table, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    text.parse::<toml::Table>()
        .map_err(|err| ConfigFileError::Syntax {
            path: path.to_path_buf(),
            message: err.message().to_string(),
        })
}

/// The clap id of the flag a key stands for.
fn flag_name(key: &str) -> String {
    key.replace('-', "_")
}

fn has_arg(command: &Command, id: &str) -> bool {
    command
        .get_arguments()
        .any(|arg| arg.get_id().as_str() == id && arg.get_long().is_some())
}

fn tree_has_arg(command: &Command, id: &str) -> bool {
    has_arg(command, id) || command.get_subcommands().any(|sub| tree_has_arg(sub, id))
}

/// Appends `--flag value...` to `out` unless the user set the flag on the command line or in
/// the environment.
fn push_flag(
    out: &mut Vec<OsString>,
    level: &Level<'_>,
    id: &str,
    value: &toml::Value,
    path: &Path,
    key: &str,
) -> Result<(), ConfigFileError> {
    let given = matches!(
        level.matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    );
    if given {
        return Ok(());
    }
    let Some(arg) = level
        .command
        .get_arguments()
        .find(|arg| arg.get_id().as_str() == id)
    else {
        return Ok(());
    };
    let Some(long) = arg.get_long() else {
        return Ok(());
    };
    let bad_value = || ConfigFileError::BadValue {
        path: path.to_path_buf(),
        key: key.to_string(),
    };
    let takes_value = arg.get_action().takes_values();
    let values = match value {
        toml::Value::Array(items) => items.iter().map(scalar).collect::<Option<Vec<_>>>(),
        other => scalar(other).map(|value| vec![value]),
    }
    .ok_or_else(bad_value)?;
    if takes_value {
        for value in values {
            out.push(format!("--{long}").into());
            out.push(value.into());
        }
    } else if matches!(value, toml::Value::Boolean(true)) {
        out.push(format!("--{long}").into());
    } else if !matches!(value, toml::Value::Boolean(false)) {
        return Err(bad_value());
    }
    Ok(())
}

fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(text) => Some(text.clone()),
        toml::Value::Integer(number) => Some(number.to_string()),
        toml::Value::Float(number) => Some(number.to_string()),
        toml::Value::Boolean(flag) => Some(flag.to_string()),
        toml::Value::Datetime(_) | toml::Value::Array(_) | toml::Value::Table(_) => None,
    }
}

/// Inserts each level's flags right after that level's subcommand name (the root's at the
/// front), so that the user's own arguments come later and clap sees them as overrides.
fn splice(args: Vec<OsString>, chain: &[Level<'_>], inserts: Vec<Vec<OsString>>) -> Vec<OsString> {
    let mut positions = Vec::with_capacity(chain.len());
    let mut cursor = 0;
    for (index, level) in chain.iter().enumerate() {
        if index == 0 {
            positions.push(1.min(args.len()));
            continue;
        }
        let name = level.command.get_name();
        let found = args
            .iter()
            .enumerate()
            .skip(cursor + 1)
            .find(|(_, arg)| arg.to_str() == Some(name))
            .map_or(args.len(), |(position, _)| position);
        cursor = found;
        positions.push((found + 1).min(args.len()));
    }
    let mut result = args;
    for (position, flags) in positions.into_iter().zip(inserts).rev() {
        result.splice(position..position, flags);
    }
    result
}

#[cfg(test)]
mod tests {
    use clap::{Args, CommandFactory, FromArgMatches as _, Parser, Subcommand};

    use super::*;

    #[derive(Debug, Parser)]
    struct TestCli {
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: TestCommand,
    }

    #[derive(Debug, Subcommand)]
    enum TestCommand {
        Run(RunArgs),
        Dlq(DlqArgs),
    }

    #[derive(Debug, Args)]
    struct RunArgs {
        #[arg(long, default_value = "redis://default")]
        redis: String,
        #[arg(long, env = "EVHOST_CONFIG_TEST_BATCH", default_value_t = 100)]
        batch_size: usize,
        #[arg(long)]
        no_watch: bool,
    }

    #[derive(Debug, Args)]
    struct DlqArgs {
        #[arg(long, default_value = "redis://default")]
        redis: String,
        #[command(subcommand)]
        command: DlqCommand,
    }

    #[derive(Debug, Subcommand)]
    enum DlqCommand {
        List {
            #[arg(long)]
            plugin: String,
        },
    }

    fn parse(file: &str, args: &[&str]) -> Result<TestCli, ConfigFileError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("evhost.toml");
        std::fs::write(&path, file).expect("write config");
        let mut argv: Vec<OsString> = args.iter().map(OsString::from).collect();
        argv.push("--config".into());
        argv.push(path.clone().into_os_string());
        let command = TestCli::command();
        let matches = command
            .clone()
            .ignore_errors(true)
            .try_get_matches_from(&argv)
            .expect("lenient first parse");
        let argv = apply(&command, &matches, argv)?;
        let matches = command.try_get_matches_from(argv).expect("second parse");
        Ok(TestCli::from_arg_matches(&matches).expect("from matches"))
    }

    #[test]
    fn file_values_fill_in_defaults_and_flags_win() {
        let file = "redis = \"redis://file\"\n[run]\nbatch_size = 7\nno-watch = true\n";
        let TestCommand::Run(run) = parse(file, &["evhost", "run"]).expect("parse").command else {
            panic!("not run");
        };
        assert_eq!(run.redis, "redis://file");
        assert_eq!(run.batch_size, 7);
        assert!(run.no_watch);

        let TestCommand::Run(run) = parse(file, &["evhost", "run", "--batch-size", "9"])
            .expect("parse")
            .command
        else {
            panic!("not run");
        };
        assert_eq!(run.batch_size, 9, "a flag beats the file");
    }

    #[test]
    fn nested_subcommands_get_their_own_levels() {
        let file = "redis = \"redis://file\"\n[dlq]\nplugin = \"payment\"\n";
        let TestCommand::Dlq(dlq) = parse(file, &["evhost", "dlq", "list"])
            .expect("parse")
            .command
        else {
            panic!("not dlq");
        };
        assert_eq!(dlq.redis, "redis://file");
        let DlqCommand::List { plugin } = dlq.command;
        assert_eq!(plugin, "payment");
    }

    #[test]
    fn unknown_keys_name_the_key_and_the_file() {
        let err = parse("[run]\nbatchsize = 7\n", &["evhost", "run"]).expect_err("unknown key");
        let message = err.to_string();
        assert!(message.contains("`run.batchsize`"), "{message}");
        assert!(message.contains("evhost.toml"), "{message}");

        let err = parse("colour = true\n", &["evhost", "run"]).expect_err("unknown key");
        assert!(err.to_string().contains("`colour`"), "{err}");

        let err = parse("[runn]\nredis = \"x\"\n", &["evhost", "run"]).expect_err("unknown table");
        assert!(err.to_string().contains("`runn`"), "{err}");
    }

    #[test]
    fn invalid_toml_is_an_error() {
        let err = parse("redis = \n", &["evhost", "run"]).expect_err("bad toml");
        assert!(matches!(err, ConfigFileError::Syntax { .. }), "{err}");
    }
}
