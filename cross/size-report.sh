#!/bin/sh
# cross/size-report.sh [BOARD] [TOP]: where a board's binary bytes go. Builds the
# board's plain release binary unstripped (cross/build.sh BOARD symbols: the same
# code, with its symbol table) and prints, from llvm-nm (any ELF architecture):
# the sections, the bytes per crate (the first path segment of each demangled
# symbol; symbols without one are musl, compiler-rt and the linker's), the
# functions whose generic code is instantiated more than once, and the TOP
# largest symbols (default 30). BOARD defaults to ath79. Compare two commits by
# running it on each: every cut names its saving.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
board=${1:-ath79}
n=${2:-30}
command -v llvm-nm >/dev/null 2>&1 || { echo "llvm-nm missing (Debian package llvm; cross/setup.sh installs it)" >&2; exit 2; }
bin=$("$top/cross/build.sh" "$board" symbols | tail -1)
bin="$top/$bin"
shipped=$(mktemp)
llvm-objcopy --strip-all --remove-section=.pdr --remove-section=.comment \
    --remove-section=.eh_frame --remove-section=.eh_frame_hdr "$bin" "$shipped"
echo "== $board: $(wc -c < "$bin") bytes with symbols, $(wc -c < "$shipped") stripped here (no symbols, no .pdr, unwind tables zeroed; gzip -9: $(gzip -9 -c "$shipped" | wc -c)); dist/$board/crd is the shipped one"
rm -f "$shipped"
echo
echo "== sections (bytes)"
llvm-size -A "$bin" | awk 'NR > 2 && $2 > 0 && $1 !~ /^\.(debug|symtab|strtab|comment|shstrtab)/ { printf "%-22s %9d\n", $1, $2 }'
syms=$(mktemp)
trap 'rm -f "$syms"' EXIT
# size TAB name, code and data symbols with a size.
# Legacy Rust mangling is only half undone by llvm-nm -C: finish it (`$LT$` is
# `<`, `..` is `::`, ...) and drop the hash; a C++ name loses its return type.
llvm-nm --print-size --size-sort --radix=d -C "$bin" 2>/dev/null |
    awk 'NF >= 4 && $3 ~ /^[tTrRdDbBvVwW]$/ { s = $2 + 0; $1 = $2 = $3 = ""; sub(/^ +/, ""); print s "\t" $0 }' |
    sed -e 's/\$LT\$/</g; s/\$GT\$/>/g; s/\$u20\$/ /g; s/\$RF\$/\&/g; s/\$BP\$/*/g; s/\$C\$/,/g' \
        -e 's/\$u7b\$/{/g; s/\$u7d\$/}/g; s/\$u5b\$/[/g; s/\$u5d\$/]/g; s/\$u27\$/'"'"'/g; s/\$SP\$/@/g' \
        -e 's/\.\./::/g; s/\t_</\t</; s/::h[0-9a-f]\{16\}$//' \
        -e 's/\t\(bool\|void\|int\|unsigned\|char\|long\|size_t\) /\t/' > "$syms"
echo
echo "== bytes per crate (symbols with a size: $(awk -F'\t' '{ t += $1 } END { print t }' "$syms") bytes)"
awk -F'\t' '
    {
        name = $2
        while (name ~ /^(<|&|\*const |\*mut |mut |dyn |_<)/) sub(/^(<|&|\*const |\*mut |mut |dyn |_<)/, "", name)
        crate = name
        if (index(crate, "::") > 0) crate = substr(crate, 1, index(crate, "::") - 1)
        else crate = "[no crate: libc, compiler-rt, linker]"
        sub(/ as .*/, "", crate)
        bytes[crate] += $1; count[crate]++
    }
    END { for (c in bytes) printf "%9d %6d  %s\n", bytes[c], count[c], c }' "$syms" | sort -rn | head -25 |
    awk 'BEGIN { printf "%9s %6s  %s\n", "BYTES", "SYMS", "CRATE" } { print }'
echo
echo "== generic code instantiated more than once (same path, different type arguments)"
awk -F'\t' '
    {
        # Drops type arguments (a `<` right after a name: Vec<u8>::push), keeps
        # qualified paths (<Foo as Bar>::baz) whole.
        name = $2; plain = ""; depth = 0; skip = 0; prev = ""
        for (i = 1; i <= length(name); i++) {
            ch = substr(name, i, 1)
            if (ch == "<") {
                depth++
                args[depth] = (prev ~ /[A-Za-z0-9_]/) ? 1 : 0
                skip += args[depth]
                if (!args[depth] && skip == 0) plain = plain ch
            } else if (ch == ">" && depth > 0) {
                if (!args[depth] && skip == 0) plain = plain ch
                skip -= args[depth]; depth--
            } else if (skip == 0) plain = plain ch
            prev = ch
        }
        bytes[plain] += $1; count[plain]++
    }
    END { for (p in bytes) if (count[p] > 1) printf "%9d %6d  %s\n", bytes[p], count[p], p }' "$syms" | sort -rn | head -20 |
    awk 'BEGIN { printf "%9s %6s  %s\n", "BYTES", "COPIES", "FUNCTION" } { print }'
echo
echo "== the $n largest symbols"
sort -t"$(printf '\t')" -k1,1 -rn "$syms" | head -"$n" | awk -F'\t' '{ printf "%9d  %s\n", $1, substr($2, 1, 150) }'
