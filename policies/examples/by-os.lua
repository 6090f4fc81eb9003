-- Admit only supported operating systems running a maintained kernel, and
-- route them by OS: workstations and servers get different profiles.
--
-- Facts come from the device's /etc/os-release (os_id = ID, os_version =
-- VERSION_ID) and uname (kernel_release). They are what the device says
-- about itself: good for routing and for nudging owners to upgrade, not
-- proof of anything.

local supported = {
  debian = { min = 12,    profile = "default" },
  ubuntu = { min = 22.04, profile = "default" },
  fedora = { min = 39,    profile = "workstation" },
  rhel   = { min = 9,     profile = "server" },
}
local MIN_KERNEL = { 5, 15 }     -- oldest maintained LTS we still accept

-- "6.1.0-13-amd64" -> 6, 1 (nil when it does not start with major.minor)
local function kernel_version(release)
  local major, minor = string.match(release or "", "^(%d+)%.(%d+)")
  return tonumber(major), tonumber(minor)
end

local function kernel_ok(release)
  local major, minor = kernel_version(release)
  if major == nil then
    return false
  end
  if major ~= MIN_KERNEL[1] then
    return major > MIN_KERNEL[1]
  end
  return minor >= MIN_KERNEL[2]
end

function enroll(req)
  local f = req.facts
  local os_id = f.os_id or "unknown"
  local entry = supported[os_id]
  if entry == nil then
    return deny("operating system '" .. os_id .. "' is not supported; use Debian 12+, Ubuntu 22.04+, Fedora 39+ or RHEL 9+")
  end
  local version = tonumber(string.match(f.os_version or "", "^%d+%.?%d*"))
  if version == nil or version < entry.min then
    return deny(os_id .. " " .. (f.os_version or "(no version)") .. " is too old; upgrade to "
                .. os_id .. " " .. entry.min .. " or later and run the agent again")
  end
  if not kernel_ok(f.kernel_release) then
    return deny("kernel " .. (f.kernel_release or "(unknown)") .. " is older than "
                .. MIN_KERNEL[1] .. "." .. MIN_KERNEL[2] .. "; install a maintained kernel and reboot")
  end
  local host = string.lower(f.hostname or "")
  if host == "" then
    return deny("the device reported no hostname")
  end
  return allow{
    profile = entry.profile,
    cn = host,
    dns = { host },
    validity = f.arch == "x86_64" and fleet.days(30) or fleet.days(14),
  }
end
