-- geosip default routing script: registrar + record-routing stateful proxy.
--
-- Kamailio users: this is kamailio.cfg's request_route written over KSR (KEMI), the same
-- function names as app_lua_kemi. geosip calls request_route() for every request; replies
-- are matched to their transaction by the server, and failure_route() runs when every
-- branch of a call failed.
--
-- Change it, then `geosip ctl cfg.reload` (or SIGHUP): a script that does not load is
-- refused and the running one stays.

function request_route()
    -- OPTIONS to the server itself (monitoring, NAT keep-alive): answered here, before the
    -- Max-Forwards check, so Max-Forwards: 0 pings still get 200 (RFC 3261 section 11).
    if KSR.is_OPTIONS() and KSR.is_myself_ruri() and not KSR.siputils.has_totag() then
        KSR.options.options_reply()
        return
    end

    -- Malformed or unsupported requests get 400/416/420/505 (RFC 3261 section 16.3).
    if KSR.sanity.check() < 0 then
        return
    end
    if KSR.maxfwd.process_maxfwd(10) < 0 then
        KSR.sl.send_reply(483, "Too Many Hops")
        return
    end

    -- Flood protection and authentication (enabled in the config).
    if not protect() then
        return
    end

    -- A CANCEL that matched no transaction (those were answered already): stateless
    -- forward, RFC 3261 section 16.10.
    if KSR.is_CANCEL() then
        KSR.forward()
        return
    end

    -- Requests within a dialog follow their Route set.
    if KSR.siputils.has_totag() then
        within_dialog()
        return
    end

    -- An ACK outside any dialog and transaction: nothing to do.
    if KSR.is_ACK() then
        return
    end

    if KSR.is_REGISTER() then
        registrar()
        return
    end

    if not authenticate_caller() then
        return
    end

    -- Initial request: stay on the path of the dialog.
    if KSR.is_INVITE() or KSR.is_SUBSCRIBE() then
        KSR.rr.record_route()
    end

    -- Requests for our users: the contacts they registered, highest q first.
    if KSR.pv.is_null("$rU") then
        KSR.sl.send_reply(484, "Address Incomplete")
        return
    end
    if KSR.registrar.lookup("location") < 0 then
        -- No binding: a known subscriber is offline (480), anyone else unknown (404). Only an
        -- authenticated caller learns the difference, so scanners cannot list users.
        if KSR.pv.get("$au") ~= nil and KSR.auth.subscriber_exists(KSR.pv.get("$rU"), KSR.pv.get("$rd")) then
            KSR.sl.send_reply(480, "Temporarily Unavailable")
        else
            KSR.sl.send_reply(404, "Not Found")
        end
        return
    end
    relay()
end

-- In-dialog requests: loose routing through the Record-Route we inserted.
function within_dialog()
    if KSR.rr.loose_route() > 0 then
        relay()
        return
    end
    if KSR.is_ACK() then
        -- ACK for a non-2xx is absorbed by the transaction layer; anything else is stray.
        return
    end
    KSR.sl.send_reply(404, "Not Here")
end

-- REGISTER: store the bindings (RFC 3261 section 10.3); the registrar answers itself.
function registrar()
    if KSR.sanity.check_require() < 0 then
        return
    end
    if not authenticate_register() then
        return
    end
    KSR.registrar.save("location")
end

-- Relay statefully; serial forking to the next q group runs in failure_route.
function relay()
    if KSR.is_INVITE() then
        KSR.tm.t_on_failure("failure_route")
    end
    if KSR.tm.t_relay() < 0 then
        KSR.sl.send_reply(500, "Server Error")
    end
end

-- Every branch failed: try the next group of contacts (lower q), unless the caller
-- cancelled or a callee declined everywhere (6xx), RFC 3261 section 16.6 and 16.7.
function failure_route()
    if KSR.tm.t_is_canceled() then
        return
    end
    local code = KSR.tm.t_get_status_code()
    if code >= 600 then
        return
    end
    if KSR.tm.t_next_contacts() > 0 then
        KSR.tm.t_on_failure("failure_route")
        KSR.tm.t_relay()
    end
end

-- Hooks filled in by the auth and pike modules; true = go on.
function protect()
    if KSR.pike ~= nil and KSR.pike.pike_check_req() < 0 then
        return false
    end
    return true
end

function authenticate_register()
    if KSR.auth == nil or not KSR.auth.enabled() then
        return true
    end
    local rc = KSR.auth.www_authenticate(KSR.pv.get("$td"))
    if rc < 0 then
        return false
    end
    KSR.auth.consume_credentials()
    return true
end

function authenticate_caller()
    if KSR.auth == nil or not KSR.auth.enabled() then
        return true
    end
    -- Only calls from our own users are challenged; calls from other domains are not.
    if not KSR.is_myself_furi() and not KSR.auth.is_local_domain(KSR.pv.get("$fd")) then
        return true
    end
    local rc = KSR.auth.proxy_authenticate(KSR.pv.get("$fd"))
    if rc < 0 then
        return false
    end
    KSR.auth.consume_credentials()
    return true
end
