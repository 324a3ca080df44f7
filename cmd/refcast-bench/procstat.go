package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat;
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// procSample is the server's resource use at one moment, summed over its
// process tree (nginx: master and workers).
type procSample struct {
	pids  int
	rssKB int64         // VmRSS: resident user memory; kernel socket buffers are not in it
	pssKB int64         // Pss from smaps_rollup: shared pages split between sharers (0 if unreadable)
	cpu   time.Duration // utime + stime
}

// sampleTree reads /proc for pid and all its descendants.
func sampleTree(pid int) (procSample, error) {
	var s procSample
	for _, p := range processTree(pid) {
		rss, err := statusKB(p, "VmRSS:")
		if err != nil {
			if p == pid {
				return s, err
			}
			continue // a child that just exited
		}
		cpu, err := cpuTime(p)
		if err != nil {
			continue
		}
		s.pids++
		s.rssKB += rss
		s.cpu += cpu
		if pss, err := rollupKB(p, "Pss:"); err == nil {
			s.pssKB += pss
		}
	}
	return s, nil
}

// processTree is pid followed by its descendants, from
// /proc/<pid>/task/<tid>/children.
func processTree(pid int) []int {
	out := []int{pid}
	for i := 0; i < len(out) && i < 1024; i++ {
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", out[i]))
		for _, t := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", out[i], t.Name()))
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(f); err == nil {
					out = append(out, c)
				}
			}
		}
	}
	return out
}

// statusKB reads a "Key:   N kB" line of /proc/<pid>/status.
func statusKB(pid int, key string) (int64, error) {
	return kbField(fmt.Sprintf("/proc/%d/status", pid), key)
}

func rollupKB(pid int, key string) (int64, error) {
	return kbField(fmt.Sprintf("/proc/%d/smaps_rollup", pid), key)
}

func kbField(path, key string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, key) {
			fs := strings.Fields(line[len(key):])
			if len(fs) == 0 {
				break
			}
			return strconv.ParseInt(fs[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s", path, key)
}

// cpuTime is utime + stime of /proc/<pid>/stat: user and system CPU time
// of every thread of the process, including exited ones.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// parseStatCPU reads fields 14 (utime) and 15 (stime) of a stat line; the
// command name (field 2) may hold spaces and parentheses, so fields are
// counted from the last ')'.
func parseStatCPU(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed stat line")
	}
	fs := strings.Fields(string(b[i+1:]))
	// fs[0] is field 3 (state), so field n is fs[n-3].
	if len(fs) < 13 {
		return 0, fmt.Errorf("short stat line")
	}
	ut, err1 := strconv.ParseInt(fs[11], 10, 64)
	st, err2 := strconv.ParseInt(fs[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("malformed stat times")
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}
