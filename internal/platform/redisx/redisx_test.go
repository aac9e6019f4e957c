package redisx_test

import (
	"testing"

	"github.com/dispatchhq/dispatch/internal/platform/redisx"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

func TestDurability(t *testing.T) {
	t.Parallel()
	for d, want := range map[redisx.Durability]bool{
		{}:                                      false,
		{SavePoints: "?"}:                       false, // unknown: only AOF is known to be off
		{AppendOnly: true}:                      true,
		{SavePoints: "3600 1 300 100 60 10000"}: true,
	} {
		if got := d.Persistent(); got != want {
			t.Errorf("%+v.Persistent() = %v, want %v", d, got, want)
		}
	}
	// What it reads agrees with the server's configuration.
	rdb, _, _ := testenv.Redis(t)
	ctx := testenv.Context(t)
	d, err := redisx.ReadDurability(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := rdb.ConfigGet(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if d.AppendOnly != (cfg["appendonly"] == "yes") || d.SavePoints != cfg["save"] {
		t.Fatalf("ReadDurability: %+v; the server says appendonly %q, save %q", d, cfg["appendonly"], cfg["save"])
	}
}
