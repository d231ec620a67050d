# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_proxy_global_optspecs
    string join \n c/config= log-level= h/help V/version
end

function __fish_proxy_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_proxy_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_proxy_using_subcommand
    set -l cmd (__fish_proxy_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c proxy -n "__fish_proxy_needs_command" -s c -l config -d 'Node config file (same as `proxy run -c FILE`)' -r -F
complete -c proxy -n "__fish_proxy_needs_command" -l log-level -d 'Log filter for `run`, `scheduler` and `demo`, in place of the config\'s `log_level`: a level (trace, debug, info, warn, error, fatal), or a level and per-module levels, e.g. `info,proxy::node::link=debug,quinn=warn`. It holds until the config file\'s own `log_level` is changed and reloaded. Without it, `RUST_LOG` is used when it parses (else it is ignored with a warning)' -r
complete -c proxy -n "__fish_proxy_needs_command" -s h -l help -d 'Print help'
complete -c proxy -n "__fish_proxy_needs_command" -s V -l version -d 'Print version'
complete -c proxy -n "__fish_proxy_needs_command" -f -a "run" -d 'Run a node'
complete -c proxy -n "__fish_proxy_needs_command" -f -a "scheduler" -d 'Run the scheduler'
complete -c proxy -n "__fish_proxy_needs_command" -f -a "check" -d 'Validate a node or scheduler config and print every problem with its key and line'
complete -c proxy -n "__fish_proxy_needs_command" -f -a "status" -d 'Show a running node\'s peers, listeners, routes and busiest flows; with `--scheduler`, a scheduler\'s nodes, links and routes'
complete -c proxy -n "__fish_proxy_needs_command" -f -a "ping" -d 'Round trips to a node over the path a new flow to it takes now, with real probe flows through the mesh (sent by the local node, asked through its admin API)'
complete -c proxy -n "__fish_proxy_needs_command" -f -a "trace" -d 'The path a new flow to a node takes now, and the round trip to each hop of it, with real probe flows (sent by the local node, asked through its admin API)'
complete -c proxy -n "__fish_proxy_needs_command" -f -a "demo" -d 'A five-region mesh on loopback that shows routing, failover and multipath live (no config, no root; about 20 seconds)'
complete -c proxy -n "__fish_proxy_needs_command" -f -a "mesh" -d 'Make and manage a mesh'
complete -c proxy -n "__fish_proxy_needs_command" -f -a "completions" -d 'Print a shell completion script, e.g. `proxy completions bash > /etc/bash_completion.d/proxy`'
complete -c proxy -n "__fish_proxy_needs_command" -f -a "man" -d 'Print the man page (roff), or with `--dir` write one page per command there'
complete -c proxy -n "__fish_proxy_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c proxy -n "__fish_proxy_using_subcommand run" -s c -l config -d 'Node config file' -r -F
complete -c proxy -n "__fish_proxy_using_subcommand run" -l log-level -d 'Log filter for `run`, `scheduler` and `demo`, in place of the config\'s `log_level`: a level (trace, debug, info, warn, error, fatal), or a level and per-module levels, e.g. `info,proxy::node::link=debug,quinn=warn`. It holds until the config file\'s own `log_level` is changed and reloaded. Without it, `RUST_LOG` is used when it parses (else it is ignored with a warning)' -r
complete -c proxy -n "__fish_proxy_using_subcommand run" -s h -l help -d 'Print help'
complete -c proxy -n "__fish_proxy_using_subcommand scheduler" -s c -l config -d 'Scheduler config file' -r -F
complete -c proxy -n "__fish_proxy_using_subcommand scheduler" -l log-level -d 'Log filter for `run`, `scheduler` and `demo`, in place of the config\'s `log_level`: a level (trace, debug, info, warn, error, fatal), or a level and per-module levels, e.g. `info,proxy::node::link=debug,quinn=warn`. It holds until the config file\'s own `log_level` is changed and reloaded. Without it, `RUST_LOG` is used when it parses (else it is ignored with a warning)' -r
complete -c proxy -n "__fish_proxy_using_subcommand scheduler" -s h -l help -d 'Print help'
complete -c proxy -n "__fish_proxy_using_subcommand check" -s c -l config -d 'Node config file' -r -F
complete -c proxy -n "__fish_proxy_using_subcommand check" -l log-level -d 'Log filter for `run`, `scheduler` and `demo`, in place of the config\'s `log_level`: a level (trace, debug, info, warn, error, fatal), or a level and per-module levels, e.g. `info,proxy::node::link=debug,quinn=warn`. It holds until the config file\'s own `log_level` is changed and reloaded. Without it, `RUST_LOG` is used when it parses (else it is ignored with a warning)' -r
complete -c proxy -n "__fish_proxy_using_subcommand check" -s h -l help -d 'Print help'
complete -c proxy -n "__fish_proxy_using_subcommand status" -l admin -d 'The node\'s admin address (`common.admin_addr`)' -r
complete -c proxy -n "__fish_proxy_using_subcommand status" -l scheduler -d 'Ask the scheduler whose admin API is at ADDR (its `admin_addr`, e.g. 127.0.0.1:9900) instead of a node' -r
complete -c proxy -n "__fish_proxy_using_subcommand status" -l token-file -d 'A file holding the admin token, when the node or scheduler requires one (wins over `PROXY_ADMIN_TOKEN`; both keep it out of the process list)' -r -F
complete -c proxy -n "__fish_proxy_using_subcommand status" -l token -d 'The admin token: on the command line it works with a warning, since every local user can read it in the process list' -r
complete -c proxy -n "__fish_proxy_using_subcommand status" -l log-level -d 'Log filter for `run`, `scheduler` and `demo`, in place of the config\'s `log_level`: a level (trace, debug, info, warn, error, fatal), or a level and per-module levels, e.g. `info,proxy::node::link=debug,quinn=warn`. It holds until the config file\'s own `log_level` is changed and reloaded. Without it, `RUST_LOG` is used when it parses (else it is ignored with a warning)' -r
complete -c proxy -n "__fish_proxy_using_subcommand status" -l json -d 'Print one JSON document (stable field names; see README) instead of tables'
complete -c proxy -n "__fish_proxy_using_subcommand status" -s h -l help -d 'Print help'
complete -c proxy -n "__fish_proxy_using_subcommand ping" -s c -l count -d 'Probes to send (a trace: per hop), 1 to 50 [default: 5 for ping, 3 for trace]' -r
complete -c proxy -n "__fish_proxy_using_subcommand ping" -s i -l interval -d 'Time between probes, 10ms to 1s, e.g. `200ms` [default: 1s for ping, 100ms for trace]' -r
complete -c proxy -n "__fish_proxy_using_subcommand ping" -l admin -d 'The local node\'s admin address (`common.admin_addr`)' -r
complete -c proxy -n "__fish_proxy_using_subcommand ping" -l token-file -d 'A file holding the admin token, when the node requires one (wins over `PROXY_ADMIN_TOKEN`)' -r -F
complete -c proxy -n "__fish_proxy_using_subcommand ping" -l token -d 'The admin token (on the command line it is visible to every local user; prefer `--token-file` or `PROXY_ADMIN_TOKEN`)' -r
complete -c proxy -n "__fish_proxy_using_subcommand ping" -l log-level -d 'Log filter for `run`, `scheduler` and `demo`, in place of the config\'s `log_level`: a level (trace, debug, info, warn, error, fatal), or a level and per-module levels, e.g. `info,proxy::node::link=debug,quinn=warn`. It holds until the config file\'s own `log_level` is changed and reloaded. Without it, `RUST_LOG` is used when it parses (else it is ignored with a warning)' -r
complete -c proxy -n "__fish_proxy_using_subcommand ping" -l json -d 'Print the admin API\'s JSON answer instead of the text'
complete -c proxy -n "__fish_proxy_using_subcommand ping" -s h -l help -d 'Print help'
complete -c proxy -n "__fish_proxy_using_subcommand trace" -s c -l count -d 'Probes to send (a trace: per hop), 1 to 50 [default: 5 for ping, 3 for trace]' -r
complete -c proxy -n "__fish_proxy_using_subcommand trace" -s i -l interval -d 'Time between probes, 10ms to 1s, e.g. `200ms` [default: 1s for ping, 100ms for trace]' -r
complete -c proxy -n "__fish_proxy_using_subcommand trace" -l admin -d 'The local node\'s admin address (`common.admin_addr`)' -r
complete -c proxy -n "__fish_proxy_using_subcommand trace" -l token-file -d 'A file holding the admin token, when the node requires one (wins over `PROXY_ADMIN_TOKEN`)' -r -F
complete -c proxy -n "__fish_proxy_using_subcommand trace" -l token -d 'The admin token (on the command line it is visible to every local user; prefer `--token-file` or `PROXY_ADMIN_TOKEN`)' -r
complete -c proxy -n "__fish_proxy_using_subcommand trace" -l log-level -d 'Log filter for `run`, `scheduler` and `demo`, in place of the config\'s `log_level`: a level (trace, debug, info, warn, error, fatal), or a level and per-module levels, e.g. `info,proxy::node::link=debug,quinn=warn`. It holds until the config file\'s own `log_level` is changed and reloaded. Without it, `RUST_LOG` is used when it parses (else it is ignored with a warning)' -r
complete -c proxy -n "__fish_proxy_using_subcommand trace" -l json -d 'Print the admin API\'s JSON answer instead of the text'
complete -c proxy -n "__fish_proxy_using_subcommand trace" -s h -l help -d 'Print help'
complete -c proxy -n "__fish_proxy_using_subcommand demo" -l log-level -d 'Log filter for `run`, `scheduler` and `demo`, in place of the config\'s `log_level`: a level (trace, debug, info, warn, error, fatal), or a level and per-module levels, e.g. `info,proxy::node::link=debug,quinn=warn`. It holds until the config file\'s own `log_level` is changed and reloaded. Without it, `RUST_LOG` is used when it parses (else it is ignored with a warning)' -r
complete -c proxy -n "__fish_proxy_using_subcommand demo" -l quick -d 'A shorter run for CI: checks its own outcome, no pauses'
complete -c proxy -n "__fish_proxy_using_subcommand demo" -l keep -d 'Leave the cluster running at the end and print each node\'s admin address'
complete -c proxy -n "__fish_proxy_using_subcommand demo" -s h -l help -d 'Print help'
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and not __fish_seen_subcommand_from init token join nodes remove help" -l log-level -d 'Log filter for `run`, `scheduler` and `demo`, in place of the config\'s `log_level`: a level (trace, debug, info, warn, error, fatal), or a level and per-module levels, e.g. `info,proxy::node::link=debug,quinn=warn`. It holds until the config file\'s own `log_level` is changed and reloaded. Without it, `RUST_LOG` is used when it parses (else it is ignored with a warning)' -r
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and not __fish_seen_subcommand_from init token join nodes remove help" -s h -l help -d 'Print help'
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and not __fish_seen_subcommand_from init token join nodes remove help" -f -a "init" -d 'Make a mesh: the CA, the scheduler\'s certificate and config, and a first join token (optionally certificates for nodes set up by hand)'
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and not __fish_seen_subcommand_from init token join nodes remove help" -f -a "token" -d 'Manage join tokens'
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and not __fish_seen_subcommand_from init token join nodes remove help" -f -a "join" -d 'Enroll this machine: make its key here, get a certificate from the scheduler, write a node config, and start the node'
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and not __fish_seen_subcommand_from init token join nodes remove help" -f -a "nodes" -d 'List the mesh\'s nodes: region, address, certificate expiry, last seen, removal'
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and not __fish_seen_subcommand_from init token join nodes remove help" -f -a "remove" -d 'Remove a node from the mesh: the scheduler revokes it, every node drops its links to it and refuses its certificate from then on'
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and not __fish_seen_subcommand_from init token join nodes remove help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from init" -l dir -d 'Directory to write into (created if missing)' -r -F
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from init" -l nodes -d 'Comma-separated node ids to make certificates for by hand, e.g. `a,b,c` (`mesh join` needs none)' -r
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from init" -l token-ttl -d 'How long the first join token is valid' -r
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from init" -l token-uses -d 'How many machines the first join token enrolls' -r
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from init" -l log-level -d 'Log filter for `run`, `scheduler` and `demo`, in place of the config\'s `log_level`: a level (trace, debug, info, warn, error, fatal), or a level and per-module levels, e.g. `info,proxy::node::link=debug,quinn=warn`. It holds until the config file\'s own `log_level` is changed and reloaded. Without it, `RUST_LOG` is used when it parses (else it is ignored with a warning)' -r
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from init" -s h -l help -d 'Print help'
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from token" -l log-level -d 'Log filter for `run`, `scheduler` and `demo`, in place of the config\'s `log_level`: a level (trace, debug, info, warn, error, fatal), or a level and per-module levels, e.g. `info,proxy::node::link=debug,quinn=warn`. It holds until the config file\'s own `log_level` is changed and reloaded. Without it, `RUST_LOG` is used when it parses (else it is ignored with a warning)' -r
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from token" -s h -l help -d 'Print help'
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from token" -f -a "create" -d 'Print a new join token (stdout: the token alone)'
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from token" -f -a "list" -d 'List the join tokens: id, state, node binding, groups, uses, expiry, creation'
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from token" -f -a "revoke" -d 'Revoke a join token: every join with it is refused from now on'
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from token" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from join" -l scheduler -d 'The scheduler\'s QUIC address, `host:port`; several comma-separated when the mesh has several schedulers (tried in turn)' -r
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from join" -l token -d 'The join token: better from `PROXY_JOIN_TOKEN` or `--token-file`, which keep it out of the process list' -r
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from join" -l token-file -d 'A file holding the join token (wins over `PROXY_JOIN_TOKEN`)' -r -F
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from join" -l node-id -d 'This node\'s id: 1-63 of a-z, 0-9 and \'-\'' -r
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from join" -l region -d 'This node\'s region label' -r
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from join" -l dir -d 'Where to write node.key, node.crt, ca.crt and config.yaml' -r -F
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from join" -l state-dir -d 'Where to put what the node rewrites while it runs (node.crt, renewed in place, and its data directory), so `--dir` can stay read-only; default: `--dir`' -r -F
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from join" -l bind -d 'UDP address of this node\'s QUIC endpoint (`mesh.bind`)' -r
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from join" -l advertise -d 'Address other nodes dial (`mesh.advertise`); default: the address the scheduler sees, on the bind port' -r
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from join" -l admin-addr -d 'The node\'s admin API address (`common.admin_addr`)' -r
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from join" -l log-level -d 'Log filter for `run`, `scheduler` and `demo`, in place of the config\'s `log_level`: a level (trace, debug, info, warn, error, fatal), or a level and per-module levels, e.g. `info,proxy::node::link=debug,quinn=warn`. It holds until the config file\'s own `log_level` is changed and reloaded. Without it, `RUST_LOG` is used when it parses (else it is ignored with a warning)' -r
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from join" -l no-start -d 'Write the files but do not start the node'
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from join" -s h -l help -d 'Print help'
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from nodes" -s c -l config -d 'The scheduler\'s config file (run this where the scheduler runs)' -r -F
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from nodes" -l log-level -d 'Log filter for `run`, `scheduler` and `demo`, in place of the config\'s `log_level`: a level (trace, debug, info, warn, error, fatal), or a level and per-module levels, e.g. `info,proxy::node::link=debug,quinn=warn`. It holds until the config file\'s own `log_level` is changed and reloaded. Without it, `RUST_LOG` is used when it parses (else it is ignored with a warning)' -r
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from nodes" -l json -d 'Print JSON (stable field names; see README) instead of a table'
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from nodes" -s h -l help -d 'Print help'
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from remove" -s c -l config -d 'The scheduler\'s config file (run this where the scheduler runs)' -r -F
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from remove" -l log-level -d 'Log filter for `run`, `scheduler` and `demo`, in place of the config\'s `log_level`: a level (trace, debug, info, warn, error, fatal), or a level and per-module levels, e.g. `info,proxy::node::link=debug,quinn=warn`. It holds until the config file\'s own `log_level` is changed and reloaded. Without it, `RUST_LOG` is used when it parses (else it is ignored with a warning)' -r
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from help" -f -a "init" -d 'Make a mesh: the CA, the scheduler\'s certificate and config, and a first join token (optionally certificates for nodes set up by hand)'
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from help" -f -a "token" -d 'Manage join tokens'
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from help" -f -a "join" -d 'Enroll this machine: make its key here, get a certificate from the scheduler, write a node config, and start the node'
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from help" -f -a "nodes" -d 'List the mesh\'s nodes: region, address, certificate expiry, last seen, removal'
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Remove a node from the mesh: the scheduler revokes it, every node drops its links to it and refuses its certificate from then on'
complete -c proxy -n "__fish_proxy_using_subcommand mesh; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c proxy -n "__fish_proxy_using_subcommand completions" -l log-level -d 'Log filter for `run`, `scheduler` and `demo`, in place of the config\'s `log_level`: a level (trace, debug, info, warn, error, fatal), or a level and per-module levels, e.g. `info,proxy::node::link=debug,quinn=warn`. It holds until the config file\'s own `log_level` is changed and reloaded. Without it, `RUST_LOG` is used when it parses (else it is ignored with a warning)' -r
complete -c proxy -n "__fish_proxy_using_subcommand completions" -s h -l help -d 'Print help'
complete -c proxy -n "__fish_proxy_using_subcommand man" -l dir -d 'Write `proxy.1`, `proxy-run.1`, ... into this directory instead' -r -F
complete -c proxy -n "__fish_proxy_using_subcommand man" -l log-level -d 'Log filter for `run`, `scheduler` and `demo`, in place of the config\'s `log_level`: a level (trace, debug, info, warn, error, fatal), or a level and per-module levels, e.g. `info,proxy::node::link=debug,quinn=warn`. It holds until the config file\'s own `log_level` is changed and reloaded. Without it, `RUST_LOG` is used when it parses (else it is ignored with a warning)' -r
complete -c proxy -n "__fish_proxy_using_subcommand man" -s h -l help -d 'Print help'
complete -c proxy -n "__fish_proxy_using_subcommand help; and not __fish_seen_subcommand_from run scheduler check status ping trace demo mesh completions man help" -f -a "run" -d 'Run a node'
complete -c proxy -n "__fish_proxy_using_subcommand help; and not __fish_seen_subcommand_from run scheduler check status ping trace demo mesh completions man help" -f -a "scheduler" -d 'Run the scheduler'
complete -c proxy -n "__fish_proxy_using_subcommand help; and not __fish_seen_subcommand_from run scheduler check status ping trace demo mesh completions man help" -f -a "check" -d 'Validate a node or scheduler config and print every problem with its key and line'
complete -c proxy -n "__fish_proxy_using_subcommand help; and not __fish_seen_subcommand_from run scheduler check status ping trace demo mesh completions man help" -f -a "status" -d 'Show a running node\'s peers, listeners, routes and busiest flows; with `--scheduler`, a scheduler\'s nodes, links and routes'
complete -c proxy -n "__fish_proxy_using_subcommand help; and not __fish_seen_subcommand_from run scheduler check status ping trace demo mesh completions man help" -f -a "ping" -d 'Round trips to a node over the path a new flow to it takes now, with real probe flows through the mesh (sent by the local node, asked through its admin API)'
complete -c proxy -n "__fish_proxy_using_subcommand help; and not __fish_seen_subcommand_from run scheduler check status ping trace demo mesh completions man help" -f -a "trace" -d 'The path a new flow to a node takes now, and the round trip to each hop of it, with real probe flows (sent by the local node, asked through its admin API)'
complete -c proxy -n "__fish_proxy_using_subcommand help; and not __fish_seen_subcommand_from run scheduler check status ping trace demo mesh completions man help" -f -a "demo" -d 'A five-region mesh on loopback that shows routing, failover and multipath live (no config, no root; about 20 seconds)'
complete -c proxy -n "__fish_proxy_using_subcommand help; and not __fish_seen_subcommand_from run scheduler check status ping trace demo mesh completions man help" -f -a "mesh" -d 'Make and manage a mesh'
complete -c proxy -n "__fish_proxy_using_subcommand help; and not __fish_seen_subcommand_from run scheduler check status ping trace demo mesh completions man help" -f -a "completions" -d 'Print a shell completion script, e.g. `proxy completions bash > /etc/bash_completion.d/proxy`'
complete -c proxy -n "__fish_proxy_using_subcommand help; and not __fish_seen_subcommand_from run scheduler check status ping trace demo mesh completions man help" -f -a "man" -d 'Print the man page (roff), or with `--dir` write one page per command there'
complete -c proxy -n "__fish_proxy_using_subcommand help; and not __fish_seen_subcommand_from run scheduler check status ping trace demo mesh completions man help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c proxy -n "__fish_proxy_using_subcommand help; and __fish_seen_subcommand_from mesh" -f -a "init" -d 'Make a mesh: the CA, the scheduler\'s certificate and config, and a first join token (optionally certificates for nodes set up by hand)'
complete -c proxy -n "__fish_proxy_using_subcommand help; and __fish_seen_subcommand_from mesh" -f -a "token" -d 'Manage join tokens'
complete -c proxy -n "__fish_proxy_using_subcommand help; and __fish_seen_subcommand_from mesh" -f -a "join" -d 'Enroll this machine: make its key here, get a certificate from the scheduler, write a node config, and start the node'
complete -c proxy -n "__fish_proxy_using_subcommand help; and __fish_seen_subcommand_from mesh" -f -a "nodes" -d 'List the mesh\'s nodes: region, address, certificate expiry, last seen, removal'
complete -c proxy -n "__fish_proxy_using_subcommand help; and __fish_seen_subcommand_from mesh" -f -a "remove" -d 'Remove a node from the mesh: the scheduler revokes it, every node drops its links to it and refuses its certificate from then on'
