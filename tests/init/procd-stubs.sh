# Stand-ins for OpenWrt's /lib/functions.sh (UCI) and procd.sh, for testing
# cross/openwrt/crd/files/crd.init on a machine without OpenWrt. The UCI "file" is
# shell variables: UCI_<section>_<option>=value, and UCI_SECTIONS_<type>="s1 s2";
# a list's items are added with uci_add_list.
# Every procd call is appended to $PROCD_LOG, one line each.

config_load() { [ "$1" = crd ] || { echo "config_load $1: unknown package" >&2; return 1; }; }

config_get() { # VAR SECTION OPTION [DEFAULT]
	local __v
	eval "__v=\${UCI_$2_$3-}"
	[ -n "$__v" ] || __v="${4-}"
	eval "$1=\$__v"
}

# `list OPTION VALUE` in SECTION: functions.sh keeps a list's items joined by
# spaces ($LIST_SEP) in the option's variable, and config_get returns that.
uci_add_list() { # SECTION OPTION VALUE
	local __v
	eval "__v=\${UCI_$1_$2-}"
	eval "UCI_$1_$2=\${__v:+\$__v }\$3"
}

config_get_bool() { # VAR SECTION OPTION [DEFAULT]
	local __b
	config_get __b "$2" "$3" "${4-}"
	case "$__b" in
		1|on|true|yes|enabled) __b=1 ;;
		*) __b=0 ;;
	esac
	eval "$1=\$__b"
}

config_foreach() { # FUNCTION TYPE
	local __s __list
	eval "__list=\${UCI_SECTIONS_$2-}"
	for __s in $__list; do "$1" "$__s"; done
}

procd_open_instance() { echo "open_instance $*" >> "$PROCD_LOG"; }
procd_set_param() { echo "set_param $*" >> "$PROCD_LOG"; }
procd_close_instance() { echo "close_instance" >> "$PROCD_LOG"; }
procd_send_signal() { echo "send_signal $*" >> "$PROCD_LOG"; }
procd_add_reload_trigger() { echo "reload_trigger $*" >> "$PROCD_LOG"; }
