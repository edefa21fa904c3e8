# Shared by the bench scripts (sourced).

# cpu PID... -> total user + system CPU seconds of the processes, from /proc.
cpu() {
    local t=0 p
    for p in "$@"; do
        t=$(awk -v t="$t" -v hz="$(getconf CLK_TCK)" '{print t + ($14+$15)/hz}' "/proc/$p/stat" 2>/dev/null || echo "$t")
    done
    echo "$t"
}
