package testnode

import (
	"encoding/csv"
	"net/http"
	"strings"
)

// HAProxyStatus reads the status (UP, DOWN, ...) of each refcast server of
// deploy/haproxy.cfg's refcast_nodes backend from HAProxy's stats CSV at
// statsBase; nil when it cannot be read.
func HAProxyStatus(statsBase string) map[string]string {
	res, err := http.Get(statsBase + "/stats;csv")
	if err != nil {
		return nil
	}
	defer res.Body.Close()
	cr := csv.NewReader(res.Body)
	cr.FieldsPerRecord = -1
	recs, err := cr.ReadAll()
	if err != nil || len(recs) == 0 {
		return nil
	}
	col := map[string]int{}
	for i, h := range recs[0] {
		col[strings.TrimPrefix(strings.TrimSpace(h), "# ")] = i
	}
	out := map[string]string{}
	for _, rec := range recs[1:] {
		if len(rec) > col["status"] && rec[col["pxname"]] == "refcast_nodes" && strings.HasPrefix(rec[col["svname"]], "refcast") {
			out[rec[col["svname"]]] = rec[col["status"]]
		}
	}
	return out
}
