package main

import (
	"bufio"
	"strings"
	"testing"
	"time"
)

func TestParseBenchData(t *testing.T) {
	sent := time.Unix(1732540000, 123456789)
	id := pushID(7, 42, sent)
	tests := []struct {
		name string
		line string
		ok   bool
	}{
		{"refcast event", `data: {"v":1,"repo":"bench/r0000","ref":"refs/heads/main","kind":"update","push":"` + id + `","time":"x"}` + "\n", true},
		{"nchan message", `data: {"push":"` + id + `"}` + "\n", true},
		{"hello", `data: {"cursor":"c1AAAA"}` + "\n", false},
		{"foreign push id", `data: {"push":"p-1"}` + "\n", false},
		{"truncated", `data: {"push":"b7-42-17`, false},
		{"missing seq", `data: {"push":"b7--1"}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			run, seq, ns, ok := parseBenchData([]byte(tt.line))
			if ok != tt.ok {
				t.Fatalf("ok = %v, want %v", ok, tt.ok)
			}
			if ok && (run != 7 || seq != 42 || ns != sent.UnixNano()) {
				t.Fatalf("got run %d seq %d ns %d", run, seq, ns)
			}
		})
	}
}

func TestParseStatCPU(t *testing.T) {
	// pid (comm) state ppid ... utime(14) stime(15)
	line := "1234 (we ird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 130 0 0 20 0 8 0 100 0 0\n"
	got, err := parseStatCPU([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if want := 3800 * time.Millisecond; got != want {
		t.Fatalf("cpu = %v, want %v", got, want)
	}
}

func TestLatencyIncompleteIsLatest(t *testing.T) {
	lat := []time.Duration{3 * time.Millisecond, -1, time.Millisecond}
	p50, _, mx := latencyMs(lat)
	if p50 != 3 || mx != -1 {
		t.Fatalf("p50 %v max %v, want 3 and -1 (incomplete)", p50, mx)
	}
}

func TestReadHead(t *testing.T) {
	tests := []struct {
		name    string
		head    string
		chunked bool
		err     bool
	}{
		{"refcast hijacked", "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n", false, false},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true, false},
		{"refused", "HTTP/1.1 503 Service Unavailable\r\n\r\n", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chunked, err := readHead(bufio.NewReader(strings.NewReader(tt.head)))
			if (err != nil) != tt.err || chunked != tt.chunked {
				t.Fatalf("chunked %v err %v", chunked, err)
			}
		})
	}
}

func TestCheckLoopback(t *testing.T) {
	for raw, ok := range map[string]bool{
		"http://127.0.0.1:8080": true,
		"http://127.9.0.3:1":    true,
		"http://10.0.0.1:8080":  false,
		"http://localhost:8080": false, // names are not resolved: say the address
		"http://[::1]:8080":     false,
	} {
		if err := checkLoopback(raw); (err == nil) != ok {
			t.Errorf("%s: err %v", raw, err)
		}
	}
}
