package httpapi

import (
	"github.com/gin-gonic/gin"

	"github.com/dispatchhq/dispatch/internal/auth"
)

// routes declares every route with its guards, in the order they run: rate limit (per client
// IP and route; GET lists and the webhook are unlimited), authentication, role group,
// idempotency, handler.
func (s *Server) routes() {
	r, rl := s.engine, s.cfg.RateLimits
	authn := s.authenticate
	admins := s.allow(auth.Admins)
	financial, shipping, delivery := s.allow(auth.Financial), s.allow(auth.Shipping), s.allow(auth.Delivery)

	// HEAD too, as the worker's and relay's ops ports answer it: load balancers probe with it.
	for path, h := range map[string]gin.HandlerFunc{"/health": s.health, "/ready": s.ready, "/metrics": metricsHandler, "/openapi.json": s.openAPI} {
		r.GET(path, h)
		r.HEAD(path, h)
	}
	if ui, closeUI, err := s.queueUI(); err != nil {
		s.log.Error("queue UI not mounted", "err", err)
	} else {
		r.Any(QueueUIPath, ui)
		r.Any(QueueUIPath+"/*path", ui)
		s.closers = append(s.closers, closeUI)
	}

	r.POST("/v1/auth/login", s.limit(rl.Login), s.idempotent(keyOwn), s.login)
	r.POST("/v1/auth/refresh", s.limit(rl.Session), s.idempotent(keyOwn), s.refresh)
	r.POST("/v1/auth/logout", s.limit(rl.Session), authn, s.idempotent(keyOwn), s.logout)

	r.POST("/v1/users", s.limit(rl.Create), s.idempotent(keyRequired), s.signUp)
	r.GET("/v1/users", authn, s.listUsers)
	r.GET("/v1/users/me", s.limit(rl.Default), authn, s.me)
	r.PATCH("/v1/users/me", s.limit(rl.Default), authn, s.idempotent(keyOptional), s.updateMe)
	r.DELETE("/v1/users/me", s.limit(rl.Default), authn, s.deleteMe)
	r.GET("/v1/users/:id", s.limit(rl.Default), authn, s.getUser)

	r.POST("/v1/admin/users", s.limit(rl.Create), authn, admins, s.idempotent(keyRequired), s.adminCreateUser)
	r.GET("/v1/admin/users", authn, admins, s.adminListUsers)
	r.GET("/v1/admin/users/:id", s.limit(rl.Default), authn, admins, s.adminGetUser)
	r.PATCH("/v1/admin/users/:id", s.limit(rl.Default), authn, admins, s.idempotent(keyOptional), s.adminUpdateUser)
	r.DELETE("/v1/admin/users/:id", s.limit(rl.Default), authn, admins, s.adminDeleteUser)

	r.GET("/v1/items", authn, s.listItems)
	r.GET("/v1/items/:id", s.limit(rl.Default), authn, s.getItem)
	r.POST("/v1/admin/items", s.limit(rl.Create), authn, admins, s.idempotent(keyRequired), s.createItem)
	r.GET("/v1/admin/items", authn, admins, s.adminListItems)
	r.GET("/v1/admin/items/:id", s.limit(rl.Default), authn, admins, s.adminGetItem)
	r.PATCH("/v1/admin/items/:id", s.limit(rl.Default), authn, admins, s.idempotent(keyOptional), s.updateItem)
	r.DELETE("/v1/admin/items/:id", s.limit(rl.Default), authn, admins, s.deleteItem)

	r.POST("/v1/orders", s.limit(rl.Create), authn, s.idempotent(keyInWrite), s.createOrder)
	r.GET("/v1/orders/me", authn, s.myOrders)
	r.GET("/v1/orders/:id", s.limit(rl.Default), authn, s.getMyOrder)
	r.GET("/v1/orders/:id/events", authn, s.orderEvents)
	r.GET("/v1/admin/orders", authn, financial, s.adminListOrders)
	r.GET("/v1/admin/orders/:id", s.limit(rl.Default), authn, financial, s.adminGetOrder)
	r.PATCH("/v1/admin/orders/:id", s.limit(rl.Default), authn, admins, s.idempotent(keyOptional), s.setOrderStatus)
	r.PATCH("/v1/admin/orders/:id/ship", s.limit(rl.Default), authn, shipping, s.idempotent(keyOptional), s.shipOrder)
	r.PATCH("/v1/admin/orders/:id/deliver", s.limit(rl.Default), authn, delivery, s.idempotent(keyOptional), s.deliverOrder)
	r.PATCH("/v1/admin/orders/:id/cancel", s.limit(rl.Default), authn, financial, s.idempotent(keyOptional), s.cancelOrder)
	r.PATCH("/v1/admin/orders/:id/refund", s.limit(rl.Default), authn, financial, s.idempotent(keyOptional), s.refundOrder)
	r.PATCH("/v1/admin/orders/:id/refund/outside", s.limit(rl.Default), authn, financial, s.idempotent(keyOptional), s.refundOutside)
	r.DELETE("/v1/admin/orders/:id", s.limit(rl.Default), authn, admins, s.deleteOrder)

	r.GET("/v1/notifications", authn, s.listNotifications)
	r.GET("/v1/notifications/unread/count", s.limit(rl.Default), authn, s.unreadCount)
	r.GET("/v1/notifications/has-new", s.limit(rl.Default), authn, s.hasNew)
	r.PATCH("/v1/notifications/read-all", s.limit(rl.Default), authn, s.idempotent(keyOptional), s.readAll)
	r.PATCH("/v1/notifications/:id/read", s.limit(rl.Default), authn, s.idempotent(keyOptional), s.markRead)

	r.POST("/stripe/webhook", s.stripeWebhook)
}
