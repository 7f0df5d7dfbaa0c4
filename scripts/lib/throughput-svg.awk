# Renders a throughput-over-time SVG from a TSV: header "second<TAB>name1<TAB>name2...",
# then one row per second with Mbit/s ("-" for no value). -v rate=<Mbit/s> draws the limit.
# -v ymax=<Mbit/s> caps the axis: a series above it is drawn along the top and
# its legend says "off scale" with its mean. The axis ends on a round value
# and ticks sit at round steps (1, 2, 2.5 or 5 times a power of ten); the
# limit is drawn last, dashed, so it shows where a series runs along it.
function nice_step(span,    raw, p, m) {
    raw = span / 5; p = 1
    while (p * 10 <= raw) p *= 10
    while (p > raw) p /= 10
    m = raw / p
    if (m <= 1) return p
    if (m <= 2) return 2 * p
    if (m <= 2.5) return 2.5 * p
    if (m <= 5) return 5 * p
    return 10 * p
}
BEGIN { FS = "\t"; W = 760; H = 380; L = 70; R = 20; T = 40; B = 50; maxy = 0; n = 0 }
NR == 1 { for (i = 2; i <= NF; i++) name[i] = $i; cols = NF; next }
{
    n++; sec[n] = $1
    for (i = 2; i <= cols; i++) { v[n, i] = $i; if ($i != "-" && $i + 0 > maxy) maxy = $i + 0 }
}
END {
    if (rate + 0 > maxy) maxy = rate + 0
    maxy = maxy * 1.1; if (maxy <= 0) maxy = 1
    if (ymax + 0 > 0 && ymax + 0 < maxy) maxy = ymax + 0
    step = nice_step(maxy); nticks = int(maxy / step); if (nticks * step < maxy) nticks++
    maxy = nticks * step
    color[2] = "#888888"; color[3] = "#1f77b4"; color[4] = "#d62728"; color[5] = "#2ca02c"
    if (colors != "") { nc = split(colors, cs, ","); for (k = 1; k <= nc; k++) color[k + 1] = cs[k] }
    lx = L + 10
    pw = W - L - R; ph = H - T - B
    printf "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"12\">\n", W, H
    printf "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
    printf "<text x=\"%d\" y=\"22\" font-size=\"15\">%s</text>\n", L, title
    for (k = 0; k <= nticks; k++) {
        val = step * k; y = T + ph - ph * val / maxy
        printf "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#eee\"/>\n", L, y, W - R, y
        printf "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", L - 6, y + 4, (val == int(val) ? sprintf("%d", val) : sprintf("%g", val))
    }
    printf "<text x=\"16\" y=\"%d\" transform=\"rotate(-90 16 %d)\" text-anchor=\"middle\">Mbit/s (receiver)</text>\n", T + ph / 2, T + ph / 2
    for (j = 1; j <= n; j++) {
        x = L + (n > 1 ? pw * (j - 1) / (n - 1) : 0)
        printf "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", x, H - B + 18, sec[j]
    }
    printf "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">second</text>\n", L + pw / 2, H - 8
    for (i = 2; i <= cols; i++) {
        pts = ""; off = 0; sum = 0; cnt = 0
        for (j = 1; j <= n; j++) {
            if (v[j, i] == "-" || v[j, i] == "") continue
            val = v[j, i] + 0; sum += val; cnt++
            if (val > maxy) { val = maxy; off = 1 }
            x = L + (n > 1 ? pw * (j - 1) / (n - 1) : 0); y = T + ph - ph * val / maxy
            pts = pts sprintf("%.1f,%.1f ", x, y)
        }
        if (off && cnt > 0) name[i] = name[i] sprintf(" (off scale, mean %.0f)", sum / cnt)
        if (pts != "") printf "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2.5\" points=\"%s\"/>\n", color[i], pts
        printf "<rect x=\"%d\" y=\"%d\" width=\"14\" height=\"4\" fill=\"%s\"/><text x=\"%d\" y=\"%d\">%s</text>\n", lx, T + 14, color[i], lx + 18, T + 19, name[i]
        lx += 18 + length(name[i]) * 7 + 24
    }
    if (rate + 0 > 0) {
        y = T + ph - ph * rate / maxy
        printf "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#000\" stroke-width=\"1.5\" stroke-dasharray=\"6,4\"/>\n", L, y, W - R, y
        printf "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">limit %g Mbit/s</text>\n", W - R, y - 6, rate
    }
    print "</svg>"
}
