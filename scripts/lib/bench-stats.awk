# Summary statistics of one number per line (blank and non-numeric lines are
# skipped). Prints: n mean median p90 p99 min max, in the input's unit.
# Median: mean of the two middle values when n is even; p90/p99: nearest
# rank (the ceil(p*n)-th smallest), the usual definition for latency.
# -v scale=K multiplies every value (e.g. 1000 for s -> ms).
BEGIN { if (scale == "") scale = 1 }
$1 ~ /^-?[0-9.]+([eE][-+]?[0-9]+)?$/ { v[++n] = $1 * scale; s += $1 * scale }
function rank(p,   k) { k = int(p * n); if (k < p * n) k++; if (k < 1) k = 1; return v[k] }
END {
    if (n == 0) { print "0 - - - - - -"; exit }
    # insertion sort is fine for the few hundred values we get
    for (i = 2; i <= n; i++) { x = v[i]; j = i - 1; while (j > 0 && v[j] > x) { v[j + 1] = v[j]; j-- } v[j + 1] = x }
    med = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    printf "%d %.4f %.4f %.4f %.4f %.4f %.4f\n", n, s / n, med, rank(0.90), rank(0.99), v[1], v[n]
}
