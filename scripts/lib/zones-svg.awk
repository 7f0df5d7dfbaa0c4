# Renders the zones demo's chart from TSV lines "run<TAB>cross-zone bytes<TAB>cost USD":
# two panels side by side, cross-zone MB per run and its estimated cost.
# -v title=... heads it.
function bar_panel(x0, label, unit, fmt, col,    i, maxv, h, bx, v) {
    maxv = 0
    for (i = 1; i <= n; i++) if (val[col, i] > maxv) maxv = val[col, i]
    if (maxv <= 0) maxv = 1
    printf "<text x=\"%d\" y=\"%d\" font-size=\"14\" font-weight=\"bold\">%s</text>\n", x0, T - 10, label
    printf "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#333\"/>\n", x0, T + PH, x0 + PW, T + PH
    for (i = 1; i <= n; i++) {
        v = val[col, i]; h = v / maxv * (PH - 20); bx = x0 + 20 + (i - 1) * (PW - 40) / n
        printf "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"/>\n", bx, T + PH - h, (PW - 40) / n - 20, h, color[i]
        printf "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"middle\">" fmt " %s</text>\n", bx + ((PW - 40) / n - 20) / 2, T + PH - h - 5, v, unit
        printf "<text x=\"%.1f\" y=\"%d\" font-size=\"12\" text-anchor=\"middle\">%s</text>\n", bx + ((PW - 40) / n - 20) / 2, T + PH + 18, name[i]
    }
}
BEGIN { FS = "\t"; n = 0; T = 70; PH = 260; PW = 360; split("#d62728,#2ca02c,#1f77b4", color, ",") }
{ n++; name[n] = $1; val[1, n] = $2 / 1e6; val[2, n] = $3 }
END {
    printf "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\">\n", 2 * PW + 60, T + PH + 50
    printf "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
    printf "<text x=\"20\" y=\"28\" font-size=\"16\">%s</text>\n", title
    bar_panel(20, "cross-zone traffic (cni-rs, both directions)", "MB", "%.1f", 1)
    bar_panel(PW + 40, "estimated inter-AZ cost", "USD", "%.6f", 2)
    print "</svg>"
}
