//go:build linux

package nftables

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	nft "github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The owner marker. nftables tables carry no comment in this library
// version, so the table's "owner" chain (never hooked) holds one rule whose
// UserData names the process that made the table: its pid and its start
// time (which tells a reused pid apart). A Start that finds a table of its
// name reads it: a live owner keeps its table, a dead one's is replaced.

const ownerPrefix = "smartproxy-owner v1 "

// ownerRule is the marker rule for this process.
func ownerRule(t *nft.Table) *nft.Rule {
	pid := os.Getpid()
	return &nft.Rule{
		Table:    t,
		Chain:    &nft.Chain{Name: chainMark, Table: t},
		Exprs:    []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}},
		UserData: fmt.Appendf(nil, "%spid=%d start=%d", ownerPrefix, pid, processStart(pid)),
	}
}

// findStale looks for an existing table of the manager's name. It returns
// "" when there is none, the marker's text when the table is a stale one
// of ours to replace, and an error when the table is someone else's or
// its owner still runs.
func (m *Manager) findStale(c *nft.Conn) (string, error) {
	t := m.table()
	if _, err := c.ListTableOfFamily(m.name, nft.TableFamilyINet); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return "", nil
		}
		return "", fmt.Errorf("nftables: looking for table %s: %w", m.name, classify(err))
	}
	rules, err := c.GetRules(t, &nft.Chain{Name: chainMark, Table: t})
	if err != nil || len(rules) == 0 || !strings.HasPrefix(string(rules[0].UserData), ownerPrefix) {
		return "", fmt.Errorf("%w: inet table %s (choose another TableName, or delete it: nft delete table inet %s)", ErrForeignTable, m.name, m.name)
	}
	marker := string(rules[0].UserData)
	var pid int
	var start uint64
	if _, err := fmt.Sscanf(strings.TrimPrefix(marker, ownerPrefix), "pid=%d start=%d", &pid, &start); err != nil {
		return "", fmt.Errorf("%w: inet table %s has an unreadable owner marker %q", ErrForeignTable, m.name, marker)
	}
	if pid != os.Getpid() && pid > 0 && processStart(pid) == start && start != 0 {
		return "", fmt.Errorf("%w: inet table %s is owned by pid %d (give each proxy its own TableName)", ErrTableInUse, m.name, pid)
	}
	return marker, nil
}

// processStart returns the start time of a process (clock ticks since
// boot, /proc/PID/stat field 22), or 0 when it does not exist.
func processStart(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces and parentheses: count
	// fields after its closing parenthesis.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0
	}
	v, _ := strconv.ParseUint(f[19], 10, 64) // field 22 is the 20th after the name
	return v
}

// inProcess holds the tables the Managers of this process have started,
// by namespace and name: the owner marker names the process, so it cannot
// tell two Managers of one process apart.
var inProcess = struct {
	sync.Mutex
	tables map[string]bool
}{tables: map[string]bool{}}

// claim reserves the manager's table in this process; release undoes it.
func (m *Manager) claim() error {
	key, err := m.tableKey()
	if err != nil {
		return err
	}
	inProcess.Lock()
	defer inProcess.Unlock()
	if inProcess.tables[key] {
		return fmt.Errorf("%w: inet table %s is used by another Manager of this process (give each proxy its own TableName)", ErrTableInUse, m.name)
	}
	inProcess.tables[key] = true
	return nil
}

func (m *Manager) release() {
	if key, err := m.tableKey(); err == nil {
		inProcess.Lock()
		delete(inProcess.tables, key)
		inProcess.Unlock()
	}
}

// tableKey names the table with its network namespace (device and inode).
func (m *Manager) tableKey() (string, error) {
	var st unix.Stat_t
	var err error
	if m.netns != 0 {
		err = unix.Fstat(m.netns, &st)
	} else {
		err = unix.Stat("/proc/thread-self/ns/net", &st)
	}
	if err != nil {
		return "", fmt.Errorf("nftables: identifying the network namespace: %w", err)
	}
	return fmt.Sprintf("%d:%d/%s", st.Dev, st.Ino, m.name), nil
}
