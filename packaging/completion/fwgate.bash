# bash completion for fwgate(1): the commands and options of fwgate/cli.py
# (tests/unit/test_completion.py keeps the two in step).

_fwgate()
{
    local cur prev words cword
    _init_completion || return

    local commands="run guard check compat repair status conflicts validate-config prevent demo"
    local common="--config --netns --help"

    case $prev in
        --config)
            _filedir '@(yaml|yml)'
            return ;;
        --netns)
            COMPREPLY=($(compgen -W "$(ls /run/netns 2>/dev/null)" -- "$cur"))
            return ;;
        --iptables)
            _filedir
            return ;;
        --settle)
            COMPREPLY=($(compgen -W "1s 3s 5s" -- "$cur"))
            return ;;
    esac

    # The first word that is not an option (nor an option's value) is the command.
    local i command=""
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
            --config | --netns | --iptables | --settle) ((i++)) ;;
            -*) ;;
            *) command=${words[i]}; break ;;
        esac
    done

    local opts
    case $command in
        "") opts="$common --version" ;;
        run) opts="$common --watch" ;;
        check | status) opts="$common --json" ;;
        conflicts) opts="$common --json --all" ;;
        compat) opts="$common --json --iptables --verify" ;;
        repair) opts="$common --json --dry-run" ;;
        validate-config) opts="$common --json --quiet" ;;
        prevent) opts="$common --undo --iptables" ;;
        demo) opts="$common --settle" ;;
        *) opts="$common" ;;
    esac

    if [[ $cur == -* || -n $command ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        if [[ $command == validate-config && $cur != -* ]]; then
            _filedir '@(yaml|yml)'
        fi
    else
        COMPREPLY=($(compgen -W "$commands" -- "$cur"))
    fi
} &&
    complete -F _fwgate fwgate
