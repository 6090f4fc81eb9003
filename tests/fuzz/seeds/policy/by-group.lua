-- Route each device group to a certificate profile.
--
-- fleetgated.conf must define the profiles named here:
--   default  client certificates for laptops (30 days)
--   server   server certificates with their DNS names (60 days)
--   kiosk    short-lived client certificates for shared kiosks (24 hours)
-- A group with no route is denied, so that a token made for a new group
-- fails loudly until someone decides what that group gets.

local DOMAIN = "corp.example"

local routes = {
  laptops = { profile = "default", validity = fleet.days(30) },
  servers = { profile = "server",  validity = fleet.days(60) },
  kiosks  = { profile = "kiosk",   validity = fleet.hours(24) },
}

-- The first label of the reported hostname, lower-cased, or nil when it
-- is not usable as a DNS label.
local function short_name(req)
  local h = string.lower(req.facts.hostname or req.device.hostname or "")
  h = string.match(h, "^([^.]+)") or ""
  if #h > 63 or not string.match(h, "^[a-z0-9][a-z0-9-]*$") then
    return nil
  end
  return h
end

function enroll(req)
  if req.new_device and req.token == nil then
    return deny("no enrollment token: ask the operator for a bootstrap bundle")
  end
  local group = req.device.group or ""
  local route = routes[group]
  if route == nil then
    return deny("group '" .. group .. "' has no certificate route; ask the operator to add it to the policy")
  end
  local name = short_name(req)
  if name == nil then
    return deny("the device reported no usable hostname (letters, digits and '-' only)")
  end
  local fqdn = name .. "." .. DOMAIN
  fleet.log("group " .. group .. " -> profile " .. route.profile)
  return allow{
    profile = route.profile,
    cn = fqdn,
    dns = { fqdn },
    validity = route.validity,
  }
end

function checkin(dev)
  return {}
end
