//! Help texts that clap's derive cannot say by itself: the four resource
//! kinds share one set of subcommands (`admin::Admin`), but each kind is
//! described in its own words; and the connection flags, global so that
//! they go anywhere on a client command's line, are hidden from the
//! commands that do not talk to a server.

use clap::Command;

/// What `rill --help` ends with.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  done
  1  the server refused or failed the request (or the command could not do it)
  2  usage error (a flag or argument is wrong or missing)
  3  not found: the basin, stream, collection, record, consumer or sink does not exist,
     or a read starts past the stream's tail
  4  no answer from the server (not running, unreachable, timed out)";

/// The flags of [`super::Connection`]: what only client commands use.
const CLIENT_FLAGS: [&str; 5] = ["endpoint", "basin", "token", "ca_cert", "json"];

/// The commands that do not talk to a server.
const LOCAL_COMMANDS: [&str; 3] = ["serve", "repair", "completions"];

/// How each kind is described: (group, one, what `create --config` takes,
/// what `delete` removes).
const KINDS: [(&str, &str, &str, &str); 6] = [
    (
        "basins",
        "basin",
        "e.g. '{\"default_stream_config\": {\"retention_policy\": {\"age\": 86400}}}'",
        "and every stream, collection and consumer in it",
    ),
    (
        "streams",
        "stream",
        "e.g. '{\"retention_policy\": {\"age\": 86400}}' (S2's stream config)",
        "and its records (their disk space is given back within seconds)",
    ),
    (
        "collections",
        "collection",
        "e.g. '{\"tombstone_retention_secs\": 86400}'",
        "with its records, its records stream and its events stream",
    ),
    (
        "consumers",
        "consumer",
        "required: its source, e.g. '{\"source\": {\"stream\": \"orders\"}}' or \
         '{\"source\": {\"collection\": \"users\", \"feed\": \"records\"}}'",
        "and what it tracked (its position and pending messages)",
    ),
    (
        "sinks",
        "sink",
        "required: its source and destination, e.g. '{\"source\": {\"stream\": \"orders\"}, \
         \"destination\": {\"webhook\": {\"url\": \"https://example.com/hook\"}}}'; \
         reconfigure '{\"paused\": true}' pauses it",
        "with its consumer and dead letters",
    ),
    (
        "sources",
        "source",
        "required: its kind and settings, e.g. '{\"http\": {\"url\": \
         \"http://other:8080/v1/collections/users/updated\", \"collection\": \"users\", \
         \"headers\": {\"s2-basin\": \"their-basin\"}}}'",
        "and its cursor (its collection stays)",
    ),
];

/// `root` with the per-kind texts and the client flags hidden where they
/// do nothing.
pub fn describe(mut root: Command) -> Command {
    for (group, one, config, deleted) in KINDS {
        root = root.mut_subcommand(group, |cmd| describe_kind(cmd, one, config, deleted));
    }
    // clap copies a global flag into each subcommand when it builds the
    // command, unless the subcommand has one of that name already: a
    // hidden copy put there first keeps it out of the help.
    let hidden: Vec<clap::Arg> = root
        .get_arguments()
        .filter(|arg| CLIENT_FLAGS.contains(&arg.get_id().as_str()))
        .map(|arg| arg.clone().hide(true))
        .collect();
    for local in LOCAL_COMMANDS {
        root = root.mut_subcommand(local, |cmd| cmd.args(hidden.clone()));
    }
    root
}

fn describe_kind(group: Command, one: &str, config: &str, deleted: &str) -> Command {
    let name = |cmd: Command, what: String| cmd.mut_arg("name", |arg| arg.help(what));
    let plural = group.get_name().to_string();
    let in_basin = if one == "basin" {
        String::new()
    } else {
        " of the basin".into()
    };
    group
        .about(format!("Manage {plural}"))
        .mut_subcommand("list", |cmd| {
            cmd.about(format!(
                "List the {plural}{in_basin}: a table, or one JSON object per line with --json"
            ))
        })
        .mut_subcommand("get", |cmd| {
            let shown = match one {
                "consumer" => "its config and state (position, pending messages, counters)",
                "sink" => "its config (without secrets) and state (lag, delivered, errors)",
                "source" => "its settings (without secrets) and state (changes, polls, errors)",
                "collection" => "its config and the name of its events stream",
                _ => "its config",
            };
            name(
                cmd.about(format!("Show a {one}: {shown}")),
                format!("The {one}'s name"),
            )
        })
        .mut_subcommand("create", |cmd| {
            name(
                cmd.about(format!("Create a {one}, or check that it exists"))
                    .mut_arg("config", |arg| {
                        arg.help(format!("The {one}'s config as JSON, {config}"))
                    }),
                format!("The {one}'s name"),
            )
        })
        .mut_subcommand("reconfigure", |cmd| {
            name(
                cmd.about(format!(
                    "Change a {one}'s config: only the fields given in --config change"
                )),
                format!("The {one}'s name"),
            )
        })
        .mut_subcommand("delete", |cmd| {
            name(
                cmd.about(format!("Delete a {one} {deleted}")),
                format!("The {one}'s name"),
            )
        })
}
