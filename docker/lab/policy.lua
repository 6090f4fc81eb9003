-- The lab's enrollment policy (docker/lab/policy.lua): one gateway, three
-- certificate authorities. The group a device's token names picks the CA;
-- devices of group "lab" are routed by their hostname instead.
--
--   laptops           local CA, client certificate, 30 days
--   servers           ACME (pebble), server certificate; pebble validates
--                     http-01 at the device itself (http-01-agent)
--   corp              SCEP (scepserver), client certificate (the CA's validity)
--   lab               by hostname: acme-* ACME, scep-* SCEP, anything else the local CA
--   EST devices       local CA, named after the CSR's CN (est.lua in policies/examples)

local routes = {
  laptops = { backend = "local", profile = "default", validity = fleet.days(30) },
  servers = { backend = "acme",  profile = "server",  validity = fleet.days(30),
              acme_challenge = "http-01-agent" },
  corp    = { backend = "scep",  profile = "default", validity = fleet.days(30) },
}

local function route_by_hostname(name)
  if name:sub(1, 5) == "acme-" then
    return routes.servers
  elseif name:sub(1, 5) == "scep-" then
    return routes.corp
  end
  return routes.laptops
end

function enroll(req)
  if req.new_device and req.token == nil and not req.renew then
    return deny("no enrollment token: ask the operator for a bootstrap bundle")
  end
  local name = req.facts.hostname
  if req.protocol == "est" then
    name = req.csr.cn
  end
  name = string.lower(name or "")
  if not name:match("^[a-z0-9][a-z0-9.-]*$") or #name > 253 then
    return deny("'" .. name .. "' is not a usable DNS name")
  end

  local route
  if req.protocol == "est" then
    route = routes.laptops
  elseif req.device.group == "lab" then
    route = route_by_hostname(name)
  else
    route = routes[req.device.group or ""]
  end
  if route == nil then
    return deny("group '" .. tostring(req.device.group) .. "' is routed to no CA")
  end
  return allow{
    backend = route.backend,
    profile = req.profile or route.profile,
    cn = name,
    dns = { name },
    validity = route.validity,
    acme_challenge = route.acme_challenge,
  }
end

function checkin(dev)
  return {}
end
