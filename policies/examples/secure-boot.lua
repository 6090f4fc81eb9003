-- Only devices that booted with UEFI Secure Boot get a certificate, and
-- servers must also have a TPM. The same rule applies at every renewal, so
-- a machine whose Secure Boot was switched off stops getting certificates.
--
-- secure_boot is true or false when the agent could read the SecureBoot
-- EFI variable, and nil when it could not (legacy BIOS boot, efivars not
-- mounted): unknown is treated as off, with its own message.

function enroll(req)
  if req.new_device and req.token == nil then
    return deny("no enrollment token: ask the operator for a bootstrap bundle")
  end
  local f = req.facts
  if f.secure_boot == nil then
    return deny("secure boot state is unknown (legacy BIOS boot, or efivars not mounted); "
                .. "boot in UEFI mode with Secure Boot on and run the agent again")
  end
  if f.secure_boot == false then
    return deny("secure boot is off: enable Secure Boot in the firmware setup, reboot, and run the agent again")
  end
  if req.device.group == "servers" and not f.tpm_present then
    return deny("servers need a TPM 2.0: enable it in the firmware (fTPM/PTT) and run the agent again")
  end
  local host = string.lower(f.hostname or "")
  if host == "" then
    return deny("the device reported no hostname")
  end
  return allow{ cn = host, dns = { host }, validity = fleet.days(90) }
end

function checkin(dev)
  return {}
end
