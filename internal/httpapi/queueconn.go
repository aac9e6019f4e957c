package httpapi

import (
	"github.com/hibiken/asynq"

	"github.com/dispatchhq/dispatch/internal/platform/redisx"
)

// queueConnOpt is REDIS_URL's target as Asynq's connection option, for the queue UI, which
// makes its own clients: through the same sentinels when REDIS_URL names them. It lives here,
// not in redisx, because the domain packages use redisx and must not depend on asynq.
func queueConnOpt(t redisx.Target) asynq.RedisConnOpt {
	if f := t.Failover; f != nil {
		return asynq.RedisFailoverClientOpt{
			MasterName: f.MasterName, SentinelAddrs: f.SentinelAddrs,
			SentinelUsername: f.SentinelUsername, SentinelPassword: f.SentinelPassword,
			Username: f.Username, Password: f.Password, DB: f.DB,
			DialTimeout: f.DialTimeout, ReadTimeout: f.ReadTimeout, WriteTimeout: f.WriteTimeout,
		}
	}
	s := t.Server
	return asynq.RedisClientOpt{
		Network: s.Network, Addr: s.Addr, Username: s.Username, Password: s.Password, DB: s.DB,
		DialTimeout: s.DialTimeout, ReadTimeout: s.ReadTimeout, WriteTimeout: s.WriteTimeout, TLSConfig: s.TLSConfig,
	}
}
