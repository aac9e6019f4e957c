package httpapi

import "github.com/dispatchhq/dispatch/internal/auth"

// routes declares every route with its guards, in the order they run: rate limit (per client
// IP and route; GET lists and the webhook are unlimited), authentication, role group,
// idempotency, handler.
func (s *Server) routes() {
	r, rl := s.engine, s.cfg.RateLimits
	authn := s.authenticate
	admins := s.allow(auth.Admins)

	r.GET("/health", s.health)
	r.GET("/ready", s.ready)

	r.POST("/v1/auth/login", s.limit(rl.Login), s.login)
	r.POST("/v1/auth/refresh", s.limit(rl.Session), s.refresh)
	r.POST("/v1/auth/logout", s.limit(rl.Session), authn, s.logout)

	r.POST("/v1/users", s.limit(rl.Create), s.idempotent(true), s.signUp)
	r.GET("/v1/users", authn, s.listUsers)
	r.GET("/v1/users/me", s.limit(rl.Default), authn, s.me)
	r.PATCH("/v1/users/me", s.limit(rl.Default), authn, s.idempotent(false), s.updateMe)
	r.DELETE("/v1/users/me", s.limit(rl.Default), authn, s.deleteMe)
	r.GET("/v1/users/:id", s.limit(rl.Default), authn, s.getUser)

	r.POST("/v1/admin/users", s.limit(rl.Create), authn, admins, s.idempotent(true), s.adminCreateUser)
	r.GET("/v1/admin/users", authn, admins, s.adminListUsers)
	r.GET("/v1/admin/users/:id", s.limit(rl.Default), authn, admins, s.adminGetUser)
	r.PATCH("/v1/admin/users/:id", s.limit(rl.Default), authn, admins, s.idempotent(false), s.adminUpdateUser)
	r.DELETE("/v1/admin/users/:id", s.limit(rl.Default), authn, admins, s.adminDeleteUser)

	r.GET("/v1/items", authn, s.listItems)
	r.GET("/v1/items/:id", s.limit(rl.Default), authn, s.getItem)
	r.POST("/v1/admin/items", s.limit(rl.Create), authn, admins, s.idempotent(true), s.createItem)
	r.GET("/v1/admin/items", authn, admins, s.adminListItems)
	r.GET("/v1/admin/items/:id", s.limit(rl.Default), authn, admins, s.adminGetItem)
	r.PATCH("/v1/admin/items/:id", s.limit(rl.Default), authn, admins, s.idempotent(false), s.updateItem)
	r.DELETE("/v1/admin/items/:id", s.limit(rl.Default), authn, admins, s.deleteItem)
}
